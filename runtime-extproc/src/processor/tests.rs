use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aigw_filterconfig as fc;
use aigw_filterconfig::{
    ApiSchema, ERROR_SHAPE_KEY, METADATA_NAMESPACE, MODEL_HEADER, SELECTED_BACKEND_HEADER,
};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, ProcessingRequest, ProcessingResponse, body_mutation, processing_response,
};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::{Value, json};

use super::metadata::*;
use super::request::*;
use crate::auth::refresh::Refreshing;
use crate::auth::{Auth, BackendCredential};
use crate::config::{Backend, Cost, Matcher, Route, Rule, RuntimeConfig, Secret};
use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use crate::redact::scrub;
use crate::testing::{event_frame, request_body, request_headers, response_body, response_headers};

// ---- Configurations ----

fn schema(name: ApiSchema, version: Option<&str>, prefix: Option<&str>) -> fc::BackendSchema {
    fc::BackendSchema {
        name,
        version: version.map(str::to_string),
        prefix: prefix.map(str::to_string),
    }
}

/// Backend `ns/{service}`, reference `reference` of rule 0 of route `ns/r`: `schema` and
/// nothing more.
fn spec(service: &str, reference: usize, schema: fc::BackendSchema) -> fc::Backend {
    fc::Backend {
        name: format!("ns/{service}/route/ns/r/rule/0/ref/{reference}"),
        service_backend: format!("ns/{service}"),
        schema,
        model_name_override: None,
        upstream_host: None,
        auth: None,
        header_mutation: None,
        body_mutation: None,
    }
}

fn ready(spec: fc::Backend, auth: Option<Auth>) -> Arc<Backend> {
    let auth = auth.map(|auth| BackendCredential {
        auth,
        override_from: None,
    });
    Arc::new(Backend { spec, auth })
}

/// A key sent in header `name`, after `prefix`.
fn key(name: &'static str, prefix: &'static str, value: &str) -> Auth {
    Auth::Header {
        name,
        prefix,
        value: Secret::new(value),
    }
}

/// SigV4 for `eu-west-1` with a key read from a file of its own: one folder per call, since
/// tests run in parallel and must never read a credentials file another one is writing.
fn aws() -> Auth {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("aigw-processor-aws-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIDPROCESSORTEST\naws_secret_access_key = processor-secret-key\n",
    )
    .unwrap();
    let signer =
        crate::auth::aws::Signer::from_config("eu-west-1", Some(&file), None, None, &dir).unwrap();
    Auth::Aws(Arc::new(signer))
}

/// The OpenAI backend `ns/{name}` (prefix `v1`, key `sk-secret`, header mutations), the model
/// renamed to `override_model` where given.
fn openai(name: &str, override_model: Option<&str>) -> Arc<Backend> {
    let header_mutation = fc::HeaderMutation {
        set: vec![fc::HeaderValue {
            name: "x-team".into(),
            value: "ml".into(),
        }],
        remove: vec!["x-drop".into()],
    };
    let spec = fc::Backend {
        model_name_override: override_model.map(str::to_string),
        header_mutation: Some(header_mutation),
        ..spec(name, 0, schema(ApiSchema::OpenAI, None, Some("v1")))
    };
    ready(spec, Some(key("authorization", "Bearer ", "sk-secret")))
}

/// A rule the processor selects itself: `backends` (with weight and priority), for requests
/// whose model is `model` (`None`: every request).
fn rule(model: Option<Matcher>, backends: Vec<(Arc<Backend>, u32, u32)>) -> Rule {
    Rule {
        matches: model
            .map(|m| vec![vec![(MODEL_HEADER.to_string(), m)]])
            .unwrap_or_default(),
        backends,
        cluster: None,
        authority: None,
    }
}

/// Route `ns/r` with the one `rule` and a total-token cost; bodies up to 1 MiB.
fn one_rule(rule: Rule) -> RuntimeConfig {
    let cost = Cost {
        key: "tokens".into(),
        kind: fc::CostType::TotalToken,
        program: None,
        service_backend: None,
        model: None,
    };
    RuntimeConfig {
        max_request_body_bytes: 1 << 20,
        routes: vec![Route {
            name: "ns/r".into(),
            hostnames: vec![],
            rules: vec![rule],
            costs: vec![cost],
            models: vec![],
        }],
        global_costs: vec![],
        files: vec![],
        has_costs: true,
        known_models: Default::default(),
        index: Default::default(),
        localities: Default::default(),
    }
}

fn without_costs(mut config: RuntimeConfig) -> RuntimeConfig {
    config.routes[0].costs.clear();
    config.has_costs = false;
    config
}

/// `gpt-4o` goes to the OpenAI backend `ns/openai` as `gpt-4o-2024` and is listed; bodies up
/// to 1 KiB; a total-token cost where `costs`.
fn config(costs: bool) -> Arc<RuntimeConfig> {
    let backend = openai("openai", Some("gpt-4o-2024"));
    let exact = Matcher::Exact("gpt-4o".into());
    let mut config = one_rule(rule(Some(exact), vec![(backend, 1, 0)]));
    config.max_request_body_bytes = 1024;
    config.routes[0].models = vec![fc::Model {
        id: "gpt-4o".into(),
        owned_by: "me".into(),
        created: 1_735_689_600,
    }];
    Arc::new(if costs { config } else { without_costs(config) })
}

/// Everything goes to the Anthropic backend `ns/claude` (key `anthropic-secret`, the model
/// renamed `claude-sonnet-4-5`); a total-token cost.
fn anthropic_config() -> Arc<RuntimeConfig> {
    let spec = fc::Backend {
        model_name_override: Some("claude-sonnet-4-5".into()),
        ..spec("claude", 0, schema(ApiSchema::Anthropic, None, Some("v1")))
    };
    let backend = ready(spec, Some(key("x-api-key", "", "anthropic-secret")));
    Arc::new(one_rule(rule(None, vec![(backend, 1, 0)])))
}

/// One route, one rule, one backend `ns/cloud` of `schema` with `auth`; a total-token cost.
fn single_backend(
    schema_name: ApiSchema,
    version: Option<&str>,
    upstream_host: Option<&str>,
    auth: Option<Auth>,
) -> Arc<RuntimeConfig> {
    let spec = fc::Backend {
        upstream_host: upstream_host.map(str::to_string),
        ..spec("cloud", 0, schema(schema_name, version, None))
    };
    Arc::new(one_rule(rule(None, vec![(ready(spec, auth), 1, 0)])))
}

/// [`single_backend`] at no version, no host of its own and no credential.
fn plain(schema: ApiSchema) -> Arc<RuntimeConfig> {
    single_backend(schema, None, None, None)
}

/// [`single_backend`] of Bedrock with no host of its own, signing with [`aws`].
fn bedrock() -> Arc<RuntimeConfig> {
    single_backend(ApiSchema::AWSBedrock, None, None, Some(aws()))
}

/// A POST of `request` to `path` on [`bedrock`], sent on signed for the client's authority
/// (which Envoy forwards) and the configured region.
fn signed_by_region(path: &str, request: &[u8]) -> (Stream, ProcessingResponse) {
    let (stream, r) = Stream::post(bedrock(), path, &[LOCAL], request);
    let set = set_headers(common_of(&r));
    assert!(
        set["authorization"].contains("/eu-west-1/bedrock/aws4_request"),
        "{set:?}"
    );
    (stream, r)
}

/// A config whose only rule matches models by regular expression, as `oa-.*`.
fn regex_config() -> Arc<RuntimeConfig> {
    let backend = ready(
        spec("cloud", 0, schema(ApiSchema::OpenAI, None, None)),
        None,
    );
    let matcher = Matcher::Regex(regex::Regex::new("^(?:oa-.*)$").unwrap());
    let mut config = without_costs(one_rule(rule(Some(matcher), vec![(backend, 1, 0)])));
    config.known_models = ["oa-configured".to_string()].into();
    Arc::new(config)
}

/// A rule whose backends Envoy chooses: an OpenAI primary and a Bedrock fallback, in cluster
/// `httproute/ns/r/rule/0` (localities `…/backend/0` and `…/backend/1`).
fn fallback_config() -> Arc<RuntimeConfig> {
    let primary = openai("openai", None);
    let spec = fc::Backend {
        model_name_override: Some("anthropic.claude-3-haiku-20240307-v1:0".into()),
        upstream_host: Some("bedrock-runtime.us-east-1.amazonaws.com".into()),
        ..spec("bedrock", 1, schema(ApiSchema::AWSBedrock, None, None))
    };
    let secondary = ready(spec, Some(aws()));
    let cluster = "httproute/ns/r/rule/0";
    let mut config = one_rule(Rule {
        cluster: Some(cluster.into()),
        authority: Some("r.ns.aigw.internal".into()),
        ..rule(
            None,
            vec![(primary.clone(), 1, 0), (secondary.clone(), 1, 1)],
        )
    });
    config.localities = [
        (format!("{cluster}/backend/0"), (0, primary)),
        (format!("{cluster}/backend/1"), (0, secondary)),
    ]
    .into_iter()
    .collect();
    Arc::new(config)
}

// ---- What Envoy sends ----

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/anthropic/v1/messages";
const COUNT_TOKENS: &str = "/anthropic/v1/messages/count_tokens";
const JSON: (&str, &str) = ("content-type", "application/json");
const SSE: (&str, &str) = ("content-type", "text/event-stream");
const EVENTSTREAM: (&str, &str) = ("content-type", "application/vnd.amazon.eventstream");
const CLIENT_KEY: (&str, &str) = ("authorization", "Bearer client-key");
const LOCAL: (&str, &str) = (":authority", "127.0.0.1:10080");

const GPT_4O: &[u8] = br#"{"model":"gpt-4o"}"#;
const GPT_4O_STREAM: &[u8] = br#"{"model":"gpt-4o","stream":true}"#;
const GEMINI_CHAT: &[u8] =
    br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#;
const FALLBACK_CHAT: &[u8] =
    br#"{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// The request headers of a POST to `path`, with `more`.
fn post(path: &str, more: &[(&str, &str)]) -> ProcessingRequest {
    let mut pairs = vec![(":path", path), (":method", "POST")];
    pairs.extend_from_slice(more);
    request_headers(&pairs, false)
}

/// A chat request from a client that sends a header the backend drops and asks for encodings.
fn chat_headers() -> ProcessingRequest {
    post(
        CHAT,
        &[
            (":authority", "gw.example:8080"),
            ("x-drop", "1"),
            ("accept-encoding", "gzip, br"),
        ],
    )
}

fn get(path: &str) -> ProcessingRequest {
    request_headers(&[(":path", path), (":method", "GET")], true)
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

/// Bedrock's binary event stream of `events` (event type and JSON payload).
fn converse_stream(events: &[(&str, &str)]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|(event, payload)| event_frame(event, payload.as_bytes()))
        .collect()
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

/// One ext_proc stream through a processor, and the metrics it records.
struct Stream {
    processor: Processor,
    metrics: Arc<Metrics>,
}

impl Stream {
    /// On the router.
    fn new(config: Arc<RuntimeConfig>) -> Self {
        Self::sharing(config, Arc::new(Metrics::new()))
    }

    /// On the router, recording into `metrics`.
    fn sharing(config: Arc<RuntimeConfig>, metrics: Arc<Metrics>) -> Self {
        let processor = Processor::new(config, metrics.clone());
        Self { processor, metrics }
    }

    /// On the filter of a rule cluster.
    fn upstream(config: Arc<RuntimeConfig>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let processor = Processor::with_role(config, metrics.clone(), Role::Upstream);
        Self { processor, metrics }
    }

    /// A stream that sent [`chat_headers`], then `request`; with the response to the body.
    fn chat(config: Arc<RuntimeConfig>, request: &[u8]) -> (Self, ProcessingResponse) {
        Self::new(config).request(chat_headers(), request)
    }

    /// A stream that sent a POST to `path` with `more` headers, then `request`; with the
    /// response to the body.
    fn post(
        config: Arc<RuntimeConfig>,
        path: &str,
        more: &[(&str, &str)],
        request: &[u8],
    ) -> (Self, ProcessingResponse) {
        Self::new(config).request(post(path, more), request)
    }

    fn request(mut self, headers: ProcessingRequest, body: &[u8]) -> (Self, ProcessingResponse) {
        self.send(headers);
        let response = self.send(request_body(body));
        (self, response)
    }

    fn send(&mut self, message: ProcessingRequest) -> ProcessingResponse {
        self.processor.handle(message)
    }

    /// Sends `messages` in turn; the response to the last.
    fn send_all(&mut self, messages: Vec<ProcessingRequest>) -> ProcessingResponse {
        let mut last = ProcessingResponse::default();
        for message in messages {
            last = self.send(message);
        }
        last
    }

    /// The response headers: `:status`, then `more`.
    fn respond(&mut self, status: &str, more: &[(&str, &str)]) -> ProcessingResponse {
        let mut pairs = vec![(":status", status)];
        pairs.extend_from_slice(more);
        self.send(response_headers(&pairs, false))
    }

    /// The response headers, then the whole `answer`; the response to the body.
    fn reply(&mut self, status: &str, more: &[(&str, &str)], answer: &[u8]) -> ProcessingResponse {
        self.respond(status, more);
        self.chunk(answer, true)
    }

    /// A piece of the response body, the last one where `end`.
    fn chunk(&mut self, bytes: &[u8], end: bool) -> ProcessingResponse {
        self.send(response_body(bytes, end))
    }
}

/// One whole buffered chat exchange on a stream of its own, recording into `metrics`.
fn exchange(config: &Arc<RuntimeConfig>, metrics: &Arc<Metrics>, request: &[u8], answer: &[u8]) {
    let (mut stream, _) =
        Stream::sharing(config.clone(), metrics.clone()).request(post(CHAT, &[]), request);
    stream.reply("200", &[JSON], answer);
}

/// One attempt on the filter of the rule cluster: `headers`, then [`FALLBACK_CHAT`]; the
/// response to the body.
fn attempt(config: &Arc<RuntimeConfig>, headers: ProcessingRequest) -> ProcessingResponse {
    Stream::upstream(config.clone())
        .request(headers, FALLBACK_CHAT)
        .1
}

// ---- What the processor answers ----

fn immediate_of(response: &ProcessingResponse) -> Option<(i32, Value)> {
    match &response.response {
        Some(processing_response::Response::ImmediateResponse(r)) => Some((
            r.status.as_ref().map_or(0, |s| s.code),
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )),
        _ => None,
    }
}

/// The body of the answer the processor gave itself, which must have `status`.
fn refused(response: &ProcessingResponse, status: i32) -> Value {
    let (got, body) =
        immediate_of(response).unwrap_or_else(|| panic!("expected an immediate {status}"));
    assert_eq!(got, status, "{body}");
    body
}

fn message_of(error: &Value) -> &str {
    error["error"]["message"].as_str().unwrap_or_default()
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

/// Asserts that `headers` holds each of `expected` (name, value).
fn assert_headers(headers: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (name, value) in expected {
        assert_eq!(
            headers.get(*name).map(String::as_str),
            Some(*value),
            "{name}"
        );
    }
}

fn removed_headers(common: &CommonResponse) -> &[String] {
    &common.header_mutation.as_ref().unwrap().remove_headers
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

/// Whether the body passes as it is.
fn untouched(response: &ProcessingResponse) -> bool {
    common_of(response).body_mutation.is_none()
}

/// The body sent on instead of the one that came in, if any.
fn replaced_body(response: &ProcessingResponse) -> Option<Vec<u8>> {
    match common_of(response)
        .body_mutation
        .as_ref()
        .and_then(|m| m.mutation.clone())
    {
        Some(body_mutation::Mutation::Body(bytes)) => Some(bytes),
        _ => None,
    }
}

fn body_of(response: &ProcessingResponse) -> Vec<u8> {
    replaced_body(response).unwrap_or_else(|| panic!("body expected in {response:?}"))
}

fn json_of(response: &ProcessingResponse) -> Value {
    serde_json::from_slice(&body_of(response)).unwrap()
}

fn text_of(response: &ProcessingResponse) -> String {
    String::from_utf8(body_of(response)).unwrap()
}

/// Whether Envoy is told to stream the response body.
fn streamed(response: &ProcessingResponse) -> bool {
    response
        .mode_override
        .as_ref()
        .map(|m| m.response_body_mode)
        == Some(BodySendMode::Streamed as i32)
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

/// The `tokens` cost in the metadata.
fn tokens(response: &ProcessingResponse) -> Option<PbValue> {
    metadata(response).get("tokens").cloned()
}

/// Requests counted as failed for another reason than the client's.
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

// ---- OpenAI backends ----

#[test]
fn routes_translates_and_authenticates_a_chat_request() {
    let mut stream = Stream::new(config(false));
    assert!(immediate_of(&stream.send(chat_headers())).is_none());
    let r = stream.send(request_body(br#"{"model":"gpt-4o","messages":[]}"#));
    let common = common_of(&r);
    assert!(common.clear_route_cache);
    let set = set_headers(common);
    assert_headers(
        &set,
        &[
            ("x-ai-eg-model", "gpt-4o"),
            (
                "x-ai-eg-selected-backend",
                "ns/openai/route/ns/r/rule/0/ref/0",
            ),
            ("authorization", "Bearer sk-secret"),
            ("x-team", "ml"),
        ],
    );
    assert!(
        !set.contains_key(":path"),
        "the path is already /v1/chat/completions"
    );
    assert_eq!(removed_headers(common), ["accept-encoding", "x-drop"]);
    // The model override rewrites the body.
    let bytes = body_of(&r);
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
    let (mut stream, _) = Stream::chat(config(true), br#"{"model":"gpt-4o","messages":[]}"#);
    let r = stream.reply("200", &[JSON], br#"{"model":"gpt-4o-2024-08","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#);
    let meta = metadata(&r);
    assert_eq!(meta.get("tokens"), Some(&number_value(7.0)));
    assert_eq!(
        meta.get("response_model"),
        Some(&string_value("gpt-4o-2024-08"))
    );
    assert!(untouched(&r), "successful responses pass through untouched");
}

#[test]
fn streams_switch_to_streamed_mode_and_force_usage_when_costs_exist() {
    let (mut stream, r) = Stream::chat(config(true), GPT_4O_STREAM);
    // Usage must be requested.
    assert_eq!(json_of(&r)["stream_options"]["include_usage"], true);
    assert!(streamed(&stream.respond("200", &[SSE])));
    let r = stream.chunk(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[],\"us",
        false,
    );
    assert!(r.dynamic_metadata.is_none());
    assert!(untouched(&r), "chunks pass through untouched");
    let r = stream.chunk(b"age\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n", true);
    let meta = metadata(&r);
    assert_eq!(meta.get("tokens"), Some(&number_value(3.0)));
    assert!(meta.contains_key("token_latency_ttft"));
}

/// The openai SDK closes the connection at `[DONE]`, often before the provider's stream ends:
/// the costs must be in the metadata of the chunk that reported the usage, since Envoy charges
/// the rate limits from the metadata it has when the stream ends.
#[test]
fn a_stream_carries_its_costs_from_the_chunk_that_reports_the_usage() {
    let (mut stream, _) = Stream::chat(config(true), GPT_4O_STREAM);
    stream.respond("200", &[SSE]);
    let r = stream.chunk(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        false,
    );
    assert!(r.dynamic_metadata.is_none(), "no usage yet");
    let r = stream.chunk(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n",
        false,
    );
    assert_eq!(tokens(&r), Some(number_value(3.0)));
    // Nothing new: no metadata again; the end of the stream still reports everything.
    assert!(stream.chunk(b"", false).dynamic_metadata.is_none());
    assert_eq!(tokens(&stream.chunk(b"", true)), Some(number_value(3.0)));
}

#[test]
fn client_mistakes_get_openai_errors() {
    let chat = |body: &[u8]| vec![chat_headers(), request_body(body)];
    let cases: Vec<(Vec<ProcessingRequest>, i32, &str)> = vec![
        (vec![post("/v2/unknown", &[])], 404, "unsupported_path"),
        (chat(b"{not json"), 400, "invalid_json"),
        (chat(br#"{"messages":[]}"#), 400, "missing_model"),
        (chat(br#"{"model":"nope"}"#), 404, "model_not_found"),
        (chat(&[b' '; 2048]), 413, "request_too_large"),
        (vec![get(CHAT)], 405, "method_not_allowed"),
    ];
    for (messages, status, code) in cases {
        let last = Stream::new(config(false)).send_all(messages);
        let (got, body) = immediate_of(&last).unwrap_or_else(|| panic!("expected {status} {code}"));
        assert_eq!(got, status, "{code}");
        assert_eq!(body["error"]["code"], code);
        assert!(!message_of(&body).is_empty(), "{code}");
    }
}

#[test]
fn models_are_listed_without_routing() {
    let listed = |path: &str| immediate_of(&Stream::new(config(false)).send(get(path))).unwrap();
    let (status, body) = listed("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1_735_689_600, "owned_by": "me"}]})
    );
    let (_, body) = listed("/anthropic/v1/models");
    assert_eq!(body["data"][0]["created_at"], "2025-01-01T00:00:00Z");
}

#[test]
fn upstream_errors_reach_the_client_in_the_openai_shape() {
    let (mut stream, _) = Stream::chat(config(false), GPT_4O);
    let r = stream.reply(
        "503",
        &[("content-type", "text/plain")],
        b"upstream overloaded",
    );
    // Non-JSON errors are wrapped.
    let error = json_of(&r);
    assert_eq!(error["error"]["message"], "upstream overloaded");
    assert_eq!(error["error"]["code"], "503");
    // JSON errors pass through as the provider sent them.
    let (mut stream, _) = Stream::chat(config(false), GPT_4O);
    assert!(untouched(&stream.reply(
        "429",
        &[],
        br#"{"error":{"message":"slow down"}}"#
    )));
}

#[test]
fn secrets_never_reach_metrics_or_debug_output() {
    let (mut stream, _) = Stream::chat(config(true), GPT_4O);
    stream.reply(
        "200",
        &[],
        br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
    );
    assert!(!stream.metrics.encode().contains("sk-secret"));
    assert!(!format!("{:?}", stream.processor.config).contains("sk-secret"));
}

#[test]
fn azure_openai_uses_the_deployment_path_and_api_version() {
    for (schema, endpoint, model, expected) in [
        (
            schema(ApiSchema::AzureOpenAI, Some("2025-01-01-preview"), None),
            Endpoint::ChatCompletions,
            "gpt-4o",
            "/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview",
        ),
        (
            schema(ApiSchema::AzureOpenAI, Some("v"), None),
            Endpoint::Embeddings,
            "emb",
            "/openai/deployments/emb/embeddings?api-version=v",
        ),
        (
            schema(ApiSchema::OpenAI, None, Some("/openai/v1/")),
            Endpoint::ChatCompletions,
            "m",
            "/openai/v1/chat/completions",
        ),
        (
            schema(ApiSchema::OpenAI, None, Some("")),
            Endpoint::Embeddings,
            "m",
            "/embeddings",
        ),
    ] {
        assert_eq!(upstream_path(&schema, endpoint, model), expected);
    }
}

// ---- Translated providers ----

#[test]
fn anthropic_backends_get_messages_requests_and_openai_responses() {
    let (mut stream, r) = Stream::post(
        anthropic_config(),
        CHAT,
        &[CLIENT_KEY],
        br#"{"model":"claude","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
    );
    let common = common_of(&r);
    assert_eq!(
        removed_headers(common),
        ["authorization"],
        "the client's key must not reach the provider"
    );
    assert_headers(
        &set_headers(common),
        &[
            (":path", "/v1/messages"),
            ("x-api-key", "anthropic-secret"),
            ("anthropic-version", "2023-06-01"),
        ],
    );
    let sent = json_of(&r);
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    assert_eq!(sent["system"], "be brief");
    assert!(sent.get("stream_options").is_none());
    let r = stream.reply(
        "200",
        &[JSON],
        br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#,
    );
    let answer = json_of(&r);
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello!");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(tokens(&r), Some(number_value(7.0)));
}

#[test]
fn anthropic_streams_are_translated_chunk_by_chunk() {
    let (mut stream, _) = Stream::chat(
        anthropic_config(),
        br#"{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert!(streamed(&stream.respond("200", &[SSE])));
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
        let r = stream.chunk(piece, end);
        out.extend(replaced_body(&r).unwrap_or_default());
        if end {
            assert_eq!(tokens(&r), Some(number_value(7.0)));
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

#[test]
fn bedrock_requests_are_converse_calls_signed_for_the_upstream_host() {
    let host = "bedrock-runtime.us-west-2.amazonaws.com";
    let config = single_backend(ApiSchema::AWSBedrock, None, Some(host), Some(aws()));
    let (mut stream, r) = Stream::post(
        config,
        CHAT,
        &[(":authority", "gw.example"), CLIENT_KEY],
        br#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let set = set_headers(common_of(&r));
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
    assert_eq!(json_of(&r)["messages"][0]["content"][0]["text"], "hi");

    // The binary event stream comes back as OpenAI chunks.
    let r = stream.respond("200", &[EVENTSTREAM, ("x-amzn-requestid", "req-1")]);
    assert!(streamed(&r));
    assert_eq!(
        set_headers(common_of(&r))
            .get("content-type")
            .map(String::as_str),
        Some("text/event-stream")
    );
    let events = converse_stream(&[
        ("messageStart", r#"{"role":"assistant"}"#),
        (
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#,
        ),
        ("messageStop", r#"{"stopReason":"end_turn"}"#),
        (
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":1,"totalTokens":4},"metrics":{"latencyMs":10}}"#,
        ),
    ]);
    let (first, second) = events.split_at(events.len() / 2 + 3);
    let mut out = body_of(&stream.chunk(first, false));
    let last = stream.chunk(second, true);
    out.extend(body_of(&last));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#""content":"Hello""#), "{text}");
    assert!(text.contains(r#""id":"req-1""#), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(tokens(&last), Some(number_value(4.0)));
}

#[test]
fn vertex_requests_get_the_project_path_and_the_token() {
    let auth = Auth::Gcp {
        token: Refreshing::fixed("gcp", Secret::new("ya29.test-token")),
        project: "acme-ml".into(),
        region: "us-central1".into(),
    };
    let config = single_backend(ApiSchema::GCPVertexAI, None, None, Some(auth));
    let (mut stream, r) = Stream::chat(config, GEMINI_CHAT);
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
    let r = stream.reply(
        "200",
        &[JSON],
        br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi!"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":3,"totalTokenCount":5}}"#,
    );
    let answer = json_of(&r);
    assert_eq!(answer["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(answer["usage"]["total_tokens"], 5);
    assert_eq!(tokens(&r), Some(number_value(5.0)));
}

#[test]
fn vertex_without_gcp_credentials_is_a_clear_500() {
    let (_, r) = Stream::chat(plain(ApiSchema::GCPVertexAI), GEMINI_CHAT);
    let error = refused(&r, 500);
    assert!(message_of(&error).contains("GCPCredentials"), "{error}");
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
        let token = Refreshing::start("Entra ID token", Never).unwrap();
        token.ready(std::time::Duration::from_secs(2)).await;
        token
    });
    let auth = Some(Auth::Bearer(token));
    let config = single_backend(ApiSchema::AzureOpenAI, Some("2025-01-01"), None, auth);
    let (_, r) = Stream::chat(
        config,
        br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let error = refused(&r, 503);
    let message = message_of(&error);
    assert!(message.contains("Entra ID token"), "{message}");
    assert!(message.contains("refused the client (401)"), "{message}");
}

#[test]
fn the_messages_api_answers_errors_in_the_anthropic_shape() {
    let (_, r) = Stream::post(
        plain(ApiSchema::Anthropic),
        MESSAGES,
        &[],
        br#"{"messages":[]}"#,
    );
    let error = refused(&r, 400);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(message_of(&error).contains("model"), "{error}");
}

#[test]
fn the_messages_api_reaches_bedrock_as_converse() {
    // No Backend hostname: signed for the client's authority and the configured region.
    let (mut stream, r) = signed_by_region(
        MESSAGES,
        br#"{"model":"amazon.nova-pro-v1:0","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(
        set_headers(common_of(&r)).get(":path").map(String::as_str),
        Some("/model/amazon.nova-pro-v1:0/converse")
    );
    let r = stream.reply(
        "200",
        &[JSON, ("x-amzn-requestid", "req-9")],
        br#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":4,"outputTokens":2,"totalTokens":6}}"#,
    );
    let answer = json_of(&r);
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["content"][0]["text"], "Hello");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(tokens(&r), Some(number_value(6.0)));
}

// ---- Credentials kept from clients ----

#[test]
fn a_provider_echoing_the_credential_never_shows_it_to_the_client() {
    // JSON error (passed through, scrubbed), plain-text error (wrapped, scrubbed), and a
    // translated provider's error.
    struct Echo {
        config: Arc<RuntimeConfig>,
        request: &'static [u8],
        status: &'static str,
        answer: &'static [u8],
        secret: &'static str,
        /// What the client must still read.
        kept: &'static [&'static str],
    }
    let cases = [
        Echo {
            config: config(false),
            request: GPT_4O,
            status: "401",
            answer: br#"{"error":{"message":"Incorrect API key provided: sk-secret. Check it."}}"#,
            secret: "sk-secret",
            kept: &["Incorrect API key provided: <redacted>. Check it."],
        },
        Echo {
            config: config(false),
            request: GPT_4O,
            status: "403",
            answer: b"key sk-secret is not allowed",
            secret: "sk-secret",
            kept: &[],
        },
        Echo {
            config: anthropic_config(),
            request: br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#,
            status: "401",
            answer: br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key anthropic-secret"}}"#,
            secret: "anthropic-secret",
            kept: &["authentication_error"],
        },
    ];
    for case in cases {
        let (mut stream, _) = Stream::chat(case.config, case.request);
        let text = text_of(&stream.reply(case.status, &[], case.answer));
        let status = case.status;
        assert!(!text.contains(case.secret), "{status}: {text}");
        for kept in case.kept {
            assert!(text.contains(kept), "{status}: {text}");
        }
    }
}

#[test]
fn error_messages_never_repeat_the_query_string() {
    let path = "/v1/chat/completions?key=query-secret-key";
    let cases: Vec<Vec<ProcessingRequest>> = vec![
        vec![get(path)],
        vec![post(
            path,
            &[("content-type", "multipart/form-data; boundary=x")],
        )],
        vec![post(path, &[]), request_body(b"{not json")],
    ];
    for messages in cases {
        let last = Stream::new(config(false)).send_all(messages);
        let (status, body) = immediate_of(&last).expect("answered by the extproc");
        let message = message_of(&body);
        assert!((400..500).contains(&status), "{status} {message}");
        assert!(message.contains("/v1/chat/completions"), "{message}");
        assert!(!message.contains("query-secret-key"), "{message}");
    }
}

#[test]
fn a_credential_echoed_in_a_stream_is_scrubbed_from_that_chunk() {
    let (mut stream, _) = Stream::chat(config(false), GPT_4O_STREAM);
    stream.respond("200", &[SSE]);
    assert!(
        untouched(&stream.chunk(b"data: {\"choices\":[]}\n\n", false)),
        "chunks without a credential pass untouched"
    );
    let r = stream.chunk(
        b"data: {\"error\":{\"message\":\"key sk-secret revoked\"}}\n\n",
        true,
    );
    let text = text_of(&r);
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

// ---- Audio uploads and other endpoints ----

#[test]
fn audio_uploads_are_routed_on_the_form_model_and_forwarded_byte_for_byte() {
    let version = Some("2025-03-01-preview");
    let config = single_backend(ApiSchema::AzureOpenAI, version, None, None);
    let (content_type, form) = transcription_form("whisper");
    let form_type = [("content-type", content_type.as_str())];
    let (_, r) = Stream::post(config, "/v1/audio/transcriptions", &form_type, &form);
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
    let (content_type, form) = transcription_form("gpt-4o");
    let form_type = [("content-type", content_type.as_str())];
    let (_, r) = Stream::post(config(false), "/v1/audio/translations", &form_type, &form);
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
    let path = "/v1/audio/transcriptions";
    let r = Stream::new(config(false)).send(post(path, &[JSON]));
    let error = refused(&r, 400);
    assert!(
        message_of(&error).contains("multipart/form-data"),
        "{error}"
    );

    let (content_type, form) = transcription_form("gpt-4o");
    let without_model =
        String::from_utf8_lossy(&form).replace("name=\"model\"", "name=\"language\"");
    let form_type = [("content-type", content_type.as_str())];
    let (_, r) = Stream::post(config(false), path, &form_type, without_model.as_bytes());
    let error = refused(&r, 400);
    assert_eq!(error["error"]["message"], "missing required field: model");
}

#[test]
fn tokenize_goes_to_the_root_and_input_tokens_to_the_responses_path() {
    let tokenize = br#"{"model":"gpt-4o","prompt":"hello"}"#;
    let (_, r) = Stream::post(config(false), "/tokenize", &[], tokenize);
    let set = set_headers(common_of(&r));
    // Routed (a backend chosen), and the path stays `/tokenize` whatever the backend's prefix.
    assert!(set.contains_key(SELECTED_BACKEND_HEADER));
    assert_eq!(set.get(":path"), None);

    let version = Some("2025-04-01-preview");
    let config = single_backend(ApiSchema::AzureOpenAI, version, None, None);
    let input_tokens = br#"{"model":"gpt-4.1","input":"hello"}"#;
    let (_, r) = Stream::post(config, "/v1/responses/input_tokens", &[], input_tokens);
    assert_eq!(
        set_headers(common_of(&r)).get(":path").map(String::as_str),
        Some("/openai/responses/input_tokens?api-version=2025-04-01-preview")
    );
}

#[test]
fn count_tokens_reaches_bedrock_as_count_tokens_with_converse_input() {
    let (mut stream, r) = signed_by_region(
        COUNT_TOKENS,
        br#"{"model":"us.anthropic.claude-3-5-haiku-20241022-v1:0","system":"Be brief.","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let set = set_headers(common_of(&r));
    // CountTokens takes the foundation model, not the cross-region inference profile.
    assert_eq!(
        set.get(":path").map(String::as_str),
        Some("/model/anthropic.claude-3-5-haiku-20241022-v1:0/count-tokens")
    );
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
    let r = stream.respond("200", &[JSON, ("x-amzn-requestid", "req-5")]);
    assert!(r.mode_override.is_none(), "a count is never streamed");
    let r = stream.chunk(br#"{"inputTokens":12}"#, true);
    assert_eq!(json_of(&r), json!({"input_tokens": 12}));
    // The count is input usage only: the total-token cost counts nothing.
    assert_eq!(tokens(&r), Some(number_value(0.0)));
    let text = stream.metrics.encode();
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
    let count = |config, request: &[u8]| Stream::post(config, COUNT_TOKENS, &[LOCAL], request);
    // Bedrock refusing the model.
    let (mut stream, _) = count(
        bedrock(),
        br#"{"model":"amazon.nova-pro-v1:0","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let error_type = (
        "x-amzn-errortype",
        "ValidationException:http://internal.amazon.com/coral/",
    );
    let r = stream.reply(
        "400",
        &[JSON, error_type],
        br#"{"message":"The provided model doesn't support counting tokens."}"#,
    );
    assert_eq!(
        json_of(&r),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "The provided model doesn't support counting tokens."}})
    );

    // A count never streams: asking for it is a client error, answered by the extproc.
    let (_, r) = count(
        bedrock(),
        br#"{"model":"anthropic.claude-3-5-haiku-20241022-v1:0","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let error = refused(&r, 400);
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    // A schema outside the Anthropic family cannot count Anthropic tokens.
    let (_, r) = count(
        plain(ApiSchema::GCPVertexAI),
        br#"{"model":"gemini-2.5-pro","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(refused(&r, 422)["type"], "error");
}

// ---- Client-chosen models ----

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
            exchange(&config, &metrics, request.as_bytes(), answer.as_bytes());
        }
        sizes.push(metrics.encode().lines().count());
    }
    // Short distinct names: the first ones are kept, the rest folded into `_other`.
    for i in 0..1500 {
        let model = json!({"model": format!("oa-{i}")}).to_string();
        exchange(&config, &metrics, model.as_bytes(), model.as_bytes());
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
    let configured = br#"{"model":"oa-configured"}"#;
    exchange(&config, &metrics, configured, configured);
    assert!(
        metrics
            .encode()
            .contains("gen_ai_original_model=\"oa-configured\"")
    );
}

#[test]
fn models_that_cannot_be_a_header_value_are_client_errors() {
    let long = format!(r#"{{"model":"oa-{}"}}"#, "m".repeat(70_000));
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (CHAT, br#"{"model":"oa-a\u0000b"}"#, "control character"),
        (CHAT, br#"{"model":"oa-a\nb"}"#, "control character"),
        (CHAT, long.as_bytes(), "at most 256"),
        (CHAT, br#"{"model":42}"#, "must be a string, not a number"),
        (CHAT, br#"{"model":["oa-x"]}"#, "not an array"),
        (MESSAGES, br#"{"model":true}"#, "not a boolean"),
    ];
    for (path, request, expected) in cases {
        let (_, r) = Stream::post(regex_config(), path, &[], request);
        let (status, error) = immediate_of(&r).unwrap_or_else(|| panic!("{expected}: no answer"));
        assert_eq!(status, 400, "{expected}");
        let message = message_of(&error);
        assert!(message.contains(expected), "{message}");
        assert!(message.len() < 200, "the model is not echoed: {message}");
        if path.starts_with("/anthropic") {
            assert_eq!(error["type"], "error");
        } else {
            assert_eq!(error["error"]["code"], "invalid_model");
        }
    }
}

// ---- Answers that cannot be used ----

#[test]
fn a_success_that_cannot_be_translated_is_a_502_in_the_client_shape() {
    // Chat completions to an Anthropic backend, the Messages API to an OpenAI one.
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let messages = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    for (schema, path, request, anthropic) in [
        (ApiSchema::Anthropic, CHAT, chat, false),
        (ApiSchema::OpenAI, MESSAGES, messages, true),
        (ApiSchema::Anthropic, MESSAGES, messages, true),
    ] {
        let (mut stream, _) = Stream::post(plain(schema), path, &[], request.as_bytes());
        assert!(immediate_of(&stream.respond("200", &[JSON])).is_none());
        let error = refused(&stream.chunk(b"not json", true), 502);
        if anthropic {
            assert_eq!(error["type"], "error", "{error}");
            assert_eq!(error["error"]["type"], "internal_server_error", "{error}");
        } else {
            assert_eq!(error["error"]["code"], "bad_upstream_response", "{error}");
            assert_eq!(error["error"]["type"], "server_error", "{error}");
        }
        assert_eq!(failures(&stream.metrics), 1, "{schema:?} {path}");
    }
}

#[test]
fn a_success_that_is_not_json_is_a_502_when_passed_through() {
    for answer in [&b"<html>oops</html>"[..], b"{\"truncated\": ", b"[1, 2]"] {
        let (mut stream, _) = Stream::chat(config(true), GPT_4O);
        let error = refused(&stream.reply("200", &[], answer), 502);
        assert_eq!(error["error"]["code"], "bad_upstream_response", "{error}");
        assert_eq!(failures(&stream.metrics), 1, "{answer:?}");
    }
}

#[test]
fn empty_successes_and_unstreamed_answers_to_streams_are_502s() {
    // Headers that end the response: no body to translate.
    let (mut stream, _) = Stream::chat(config(false), GPT_4O);
    let end = response_headers(&[(":status", "200"), JSON], true);
    let error = refused(&stream.send(end), 502);
    assert!(message_of(&error).contains("empty body"), "{error}");

    // A body that is there but empty.
    let (mut stream, _) = Stream::chat(
        plain(ApiSchema::Anthropic),
        br#"{"model":"m","messages":[]}"#,
    );
    refused(&stream.reply("200", &[JSON], b""), 502);

    // A stream was asked for and JSON came back: not switched to streamed mode, a 502.
    for (schema, path) in [
        (ApiSchema::Anthropic, CHAT),
        (ApiSchema::OpenAI, CHAT),
        (ApiSchema::Anthropic, MESSAGES),
    ] {
        let (mut stream, _) = Stream::post(
            plain(schema),
            path,
            &[],
            br#"{"model":"m","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let r = stream.respond("200", &[JSON]);
        assert!(r.mode_override.is_none());
        let error = refused(&r, 502);
        assert!(message_of(&error).contains("event stream"), "{error}");
        assert_eq!(
            error["type"] == "error",
            path.starts_with("/anthropic"),
            "{error}"
        );
        assert_eq!(failures(&stream.metrics), 1, "{schema:?} {path}");
        // Whatever Envoy still sends passes through untouched.
        let r = stream.chunk(b"not json", true);
        assert!(immediate_of(&r).is_none());
        assert!(untouched(&r));
    }
}

#[test]
fn non_json_provider_errors_take_the_client_shape() {
    let (mut stream, _) = Stream::post(
        plain(ApiSchema::Anthropic),
        MESSAGES,
        &[],
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let html = ("content-type", "text/html");
    let error = json_of(&stream.reply("504", &[html], b"<html>gateway timeout</html>"));
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "timeout_error", "{error}");
}

#[test]
fn envoy_is_told_how_to_shape_its_own_errors_and_to_leave_ours_alone() {
    let shape = |r: &ProcessingResponse| metadata(r).get(ERROR_SHAPE_KEY).cloned();
    let mut stream = Stream::new(config(false));
    assert_eq!(
        shape(&stream.send(chat_headers())),
        Some(string_value("openai"))
    );
    let r = stream.send(request_body(br#"{"model":"nope"}"#));
    assert_eq!(immediate_of(&r).map(|(s, _)| s), Some(404));
    assert_eq!(shape(&r), Some(string_value("")));

    let r = Stream::new(config(false)).send(post(MESSAGES, &[]));
    assert_eq!(shape(&r), Some(string_value("anthropic")));

    // A provider fault answered by the extproc keeps its costs metadata and is marked too.
    let (mut stream, _) = Stream::chat(config(true), GPT_4O);
    let meta = metadata(&stream.reply("200", &[], b"not json"));
    assert_eq!(meta.get(ERROR_SHAPE_KEY), Some(&string_value("")));
    assert!(meta.contains_key("response_model"), "{meta:?}");
}

// ---- Rules whose backend Envoy chooses ----

#[test]
fn a_rule_with_a_cluster_is_only_selected_on_the_router() {
    let client = [(":authority", "gw.example:8080"), CLIENT_KEY];
    let (_, r) = Stream::post(fallback_config(), CHAT, &client, FALLBACK_CHAT);
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
    assert_eq!(removed_headers(common), ["authorization"]);
    assert_eq!(metadata(&r).get("route_name"), Some(&string_value("ns/r")));
}

#[test]
fn each_attempt_is_translated_and_signed_for_the_backend_it_reached() {
    let config = fallback_config();
    let forwarded = [
        (":authority", "gw.example:8080"),
        CLIENT_KEY,
        ("x-ai-eg-model", "claude"),
        ("x-aigw-rule", "httproute/ns/r/rule/0"),
    ];
    let at = |backend: &str| {
        let region = format!("httproute/ns/r/rule/0/backend/{backend}");
        attempt(&config, at_locality(post(CHAT, &forwarded), &region))
    };
    // The first attempt reaches the OpenAI primary: passed through with its key.
    let r = at("0");
    let common = common_of(&r);
    let set = set_headers(common);
    assert_eq!(
        set.get("authorization").map(String::as_str),
        Some("Bearer sk-secret")
    );
    assert!(!common.clear_route_cache);
    let removed = removed_headers(common);
    assert!(removed.contains(&"x-aigw-rule".to_string()), "{removed:?}");
    // Streams ask for usage, for the costs.
    assert_eq!(json_of(&r)["stream_options"]["include_usage"], true);

    // The retry reaches the Bedrock fallback: a Converse call, signed for its host.
    let r = at("1");
    let set = set_headers(common_of(&r));
    assert_headers(
        &set,
        &[
            (
                ":path",
                "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
            ),
            (":authority", "bedrock-runtime.us-east-1.amazonaws.com"),
        ],
    );
    assert!(
        set.get("authorization")
            .is_some_and(|a| a.contains("/us-east-1/bedrock/aws4_request")),
        "{set:?}"
    );
    assert_eq!(json_of(&r)["messages"][0]["content"][0]["text"], "hi");
}

#[test]
fn an_attempt_starts_from_the_request_the_router_passed_not_from_the_attempt_before_it() {
    let config = fallback_config();
    let forwarded = [
        (":path", "/v1/chat/completions"),
        (":method", "POST"),
        JSON,
        ("x-ai-eg-model", "claude"),
        ("x-aigw-rule", "httproute/ns/r/rule/0"),
        (":authority", "r.ns.aigw.internal"),
        ("x-aigw-authority", "gw.example:8080"),
        ("x-forwarded-host", "client.example, r.ns.aigw.internal"),
    ];
    // The first attempt reaches Bedrock: Converse path, its host, SigV4 headers.
    let headers = request_headers(&forwarded, false);
    let r = attempt(
        &config,
        at_locality(headers, "httproute/ns/r/rule/0/backend/1"),
    );
    let left = mutated(&forwarded, &r);
    assert!(
        left.iter().any(|(k, _)| k.starts_with("x-amz-")),
        "{left:?}"
    );
    // Envoy gives the retry the same header map, and the metadata the first attempt wrote.
    let left: Vec<(&str, &str)> = left.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut retry = at_locality(
        request_headers(&left, false),
        "httproute/ns/r/rule/0/backend/0",
    );
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
    let r = attempt(&config, retry);
    assert!(
        immediate_of(&r).is_none(),
        "the retry is served, not refused"
    );
    let sent: BTreeMap<String, String> = mutated(&left, &r).into_iter().collect();
    let sent_header = |name: &str| sent.get(name).map(String::as_str);
    assert_eq!(sent_header(":path"), Some("/v1/chat/completions"));
    assert_eq!(sent_header("authorization"), Some("Bearer sk-secret"));
    assert!(!sent.keys().any(|k| k.starts_with("x-amz-")), "{sent:?}");
    assert!(!sent.contains_key("x-aigw-rule"), "{sent:?}");
    assert!(!sent.contains_key("x-aigw-authority"), "{sent:?}");
    // The primary has no hostname of its own: the client's Host, and the client's host where
    // Envoy's host rewrite recorded the rule's virtual host.
    assert_eq!(sent_header(":authority"), Some("gw.example:8080"));
    assert_eq!(
        sent_header("x-forwarded-host"),
        Some("client.example, gw.example:8080")
    );
    assert_eq!(sent_header("content-type"), Some("application/json"));
    assert_eq!(json_of(&r)["model"], "claude");
}

#[test]
fn an_attempt_at_an_unknown_locality_is_a_clear_500() {
    let elsewhere = at_locality(chat_headers(), "httproute/ns/other/rule/0/backend/0");
    let error = refused(&attempt(&fallback_config(), elsewhere), 500);
    assert_eq!(error["error"]["code"], "unknown_backend");
}

#[test]
fn the_response_is_translated_back_for_the_backend_that_answered() {
    let (mut stream, _) = Stream::chat(fallback_config(), FALLBACK_CHAT);
    // Envoy retried on the fallback; the response names its locality.
    let r = stream.send(at_locality(
        response_headers(&[(":status", "200"), EVENTSTREAM], false),
        "httproute/ns/r/rule/0/backend/1",
    ));
    assert!(streamed(&r));
    assert_eq!(
        metadata(&r).get("backend_name"),
        Some(&string_value("ns/bedrock/route/ns/r/rule/0/ref/1"))
    );
    let events = converse_stream(&[
        (
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#,
        ),
        ("messageStop", r#"{"stopReason":"end_turn"}"#),
        (
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5},"metrics":{"latencyMs":10}}"#,
        ),
    ]);
    let last = stream.chunk(&events, true);
    let text = text_of(&last);
    assert!(text.contains(r#""content":"Hello""#), "{text}");
    assert_eq!(tokens(&last), Some(number_value(5.0)));
    let exposition = stream.metrics.encode();
    assert!(
        exposition.contains(r#"gen_ai_provider_name="aws.bedrock""#),
        "{exposition}"
    );
}

#[test]
fn a_reply_envoy_made_itself_is_counted_against_the_preferred_backend() {
    let (mut stream, _) = Stream::chat(fallback_config(), FALLBACK_CHAT);
    // No upstream answered (no locality): Envoy's own 503 passes as it is.
    let r = stream.respond("503", &[("content-type", "text/plain")]);
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
