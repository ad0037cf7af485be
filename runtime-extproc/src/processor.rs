//! One ext_proc stream, as a state machine: each message Envoy sends in, one response out.
//!
//! The filter runs on the router (the generated EnvoyExtensionPolicy): request headers, then the
//! buffered request body, then response headers and the response body (buffered, or streamed
//! when the response is an event stream). On the request body the processor reads the model,
//! picks the route, rule and backend, translates the request for the backend, adds credentials,
//! sets `x-ai-eg-model` and `x-ai-eg-selected-backend` and clears the route cache so that Envoy
//! routes to that backend. On the way back it reads token usage, computes costs and writes them,
//! with the other request facts, as dynamic metadata in `io.envoy.ai_gateway`, and records
//! metrics.
//!
//! A client mistake (unknown path or model, malformed JSON, body too large) gets a 4xx in the
//! OpenAI error shape; nothing a client sends makes the processor fail the stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aigw_filterconfig::{
    ATTEMPT_METADATA_NAMESPACE, ATTEMPT_ORIGINALS_KEY, ApiSchema, CLIENT_AUTHORITY_HEADER,
    ERROR_SHAPE_KEY, METADATA_NAMESPACE, MODEL_HEADER, RULE_HOST_DOMAIN, SELECTED_BACKEND_HEADER,
    SELECTED_RULE_HEADER,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, Metadata, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ProcessingMode, processing_mode::BodySendMode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse, TrailersResponse,
    body_mutation, processing_request, processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::{Value, json};

use crate::auth::{AuthError, UpstreamCall};
use crate::config::{Backend, RuntimeConfig, Secret};
use crate::costs::{self, CostInput};
use crate::endpoint::Endpoint;
use crate::metrics::{DurationLabels, GenAiLabels, Metrics, TokenLabels};
use crate::redact::redact;
use crate::router;
use crate::time::format_rfc3339;
use crate::translate::{
    RequestContext, ResponseContext, StreamTranslator, TranslateError, Translator, multipart,
};
use crate::usage::{self, StreamUsage, TokenUsage};

/// What the request turned out to be, once its body was read.
#[derive(Debug)]
struct Selection {
    route: usize,
    backend: Arc<Backend>,
    original_model: String,
    request_model: String,
    stream: bool,
    /// Translates between the client's API and the backend's; `None`: bytes pass through.
    translator: Option<Box<dyn Translator>>,
    /// Credential values sent upstream (keys and tokens, without `Bearer `), kept to scrub
    /// them from provider errors.
    sent_secrets: Vec<Secret>,
}

/// The request body, read once the whole of it is in.
struct Parsed {
    /// The parts of a form (audio uploads), its `model` and whether it asks for a stream.
    form: Option<(Vec<multipart::Part>, String, bool)>,
    /// The JSON body (an empty object for forms).
    request: Value,
    model: String,
    stream: bool,
}

/// What one attempt sends instead of the client's request.
struct Prepared {
    selection: Selection,
    set: Vec<HeaderValueOption>,
    remove: Vec<String>,
    body: Option<BodyMutation>,
}

/// On the router, a request whose rule lets Envoy choose the backend, until its response
/// names the backend that answered.
struct Pending {
    route: usize,
    rule: usize,
    /// The request as read on the router, translated once the backend is known.
    parsed: Parsed,
}

/// Which filter opened the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// The ext_proc filter on the router (the generated EnvoyExtensionPolicy): the whole
    /// request and response.
    #[default]
    Router,
    /// The ext_proc filter of a rule cluster: the request of one attempt.
    Upstream,
}

#[derive(Default)]
struct ResponseState {
    status: u16,
    headers: Vec<(String, String)>,
    streaming: bool,
    stream: StreamUsage,
    /// Translates a streamed response of another API, chunk by chunk.
    translator: Option<Box<dyn StreamTranslator>>,
    /// Usage and model read while translating a buffered response.
    translated: Option<(TokenUsage, Option<String>)>,
    body: Vec<u8>,
    first_chunk: Option<Instant>,
    finished: bool,
    /// The usage whose costs the stream's metadata already carries.
    charged: TokenUsage,
}

/// The state of one stream.
pub struct Processor {
    config: Arc<RuntimeConfig>,
    metrics: Arc<Metrics>,
    started: Instant,
    endpoint: Option<Endpoint>,
    path: String,
    /// `:authority` as the client sent it.
    authority: String,
    /// Dynamic metadata Envoy sent along (for per-request credentials).
    metadata: Option<Metadata>,
    /// The host part of the authority, lower-cased (for hostname matching).
    host: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    selection: Option<Selection>,
    /// A request routed to a rule cluster, waiting for the backend that answers.
    pending: Option<Pending>,
    response: ResponseState,
    /// The request was answered by the processor itself: later messages pass through.
    answered: bool,
    role: Role,
    /// The Envoy locality (`region`) of the attempt, from the `upstream.locality` attribute.
    locality: Option<String>,
    /// In a rule cluster: the values request headers had before an attempt of this request
    /// first changed them (`None`: absent), from the metadata the attempts before this one left.
    originals: BTreeMap<String, Option<String>>,
}

fn header_value(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: String::new(),
            raw_value: value.as_bytes().to_vec(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// The OpenAI error body.
pub fn openai_error(message: &str, kind: &str, code: &str) -> Vec<u8> {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        .to_string()
        .into_bytes()
}

fn immediate(status: u16, body: Vec<u8>, details: &str) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(
            ImmediateResponse {
                status: Some(HttpStatus {
                    code: i32::from(status),
                }),
                headers: Some(HeaderMutation {
                    set_headers: vec![header_value("content-type", "application/json")],
                    remove_headers: vec![],
                }),
                body,
                grpc_status: None,
                // Envoy's local reply mappers leave replies with this prefix alone: they are
                // shaped already (and the filter of a rule cluster cannot mark them through
                // the downstream metadata).
                details: format!("{}{details}", aigw_filterconfig::SHAPED_REPLY_PREFIX),
            },
        )),
        ..Default::default()
    }
}

/// An error body in the client's API shape: OpenAI's, or Anthropic's on the Messages API.
fn error_body(status: u16, message: &str, code: &str, anthropic: bool) -> Vec<u8> {
    if anthropic {
        let body = json!({"type": "error", "error": {"type": crate::translate::anthropic::error_type_for(status), "message": message}});
        return body.to_string().into_bytes();
    }
    let kind = match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    openai_error(message, kind, code)
}

/// An error answered by the extproc, in the client's API shape.
fn error_response(status: u16, message: &str, code: &str, anthropic: bool) -> ProcessingResponse {
    immediate(status, error_body(status, message, code, anthropic), code)
}

/// Longest `model` a request may carry: it travels in a header (`x-ai-eg-model`) and in paths.
pub const MAX_MODEL_BYTES: usize = 256;

/// Checks a client's `model` before it becomes a header value: bounded in length, and without
/// control characters (which no header value may hold).
fn check_model(model: &str) -> Result<(), String> {
    if model.len() > MAX_MODEL_BYTES {
        return Err(format!(
            "model is {} bytes long; at most {MAX_MODEL_BYTES} are accepted",
            model.len()
        ));
    }
    if model.chars().any(char::is_control) {
        return Err("model contains a control character".to_string());
    }
    Ok(())
}

fn headers_response(common: CommonResponse) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(common),
            },
        )),
        ..Default::default()
    }
}

fn read_headers(headers: &HttpHeaders) -> Vec<(String, String)> {
    headers
        .headers
        .as_ref()
        .map(|map| {
            map.headers
                .iter()
                .map(|h| {
                    let value = if h.raw_value.is_empty() {
                        h.value.clone()
                    } else {
                        String::from_utf8_lossy(&h.raw_value).into_owned()
                    };
                    (h.key.to_ascii_lowercase(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_struct(fields: BTreeMap<String, PbValue>) -> Struct {
    let inner = Struct {
        fields: fields.into_iter().collect(),
    };
    Struct {
        fields: [(
            METADATA_NAMESPACE.to_string(),
            PbValue {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into_iter()
        .collect(),
    }
}

/// Sets `key` in the response's `io.envoy.ai_gateway` metadata, keeping what is there.
/// `x-forwarded-host` with the rule hosts the router set ([`RULE_HOST_DOMAIN`]) replaced by the
/// client's authority.
fn restore_forwarded_host(forwarded: &str, client: &str) -> String {
    let suffix = format!(".{RULE_HOST_DOMAIN}");
    forwarded
        .split(',')
        .map(|part| {
            let part = part.trim();
            if part.ends_with(&suffix) {
                client
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The original header values earlier attempts of this request recorded in the
/// [`ATTEMPT_METADATA_NAMESPACE`] metadata.
fn attempt_originals(metadata: Option<&Metadata>) -> BTreeMap<String, Option<String>> {
    let Some(Kind::StructValue(originals)) = metadata
        .and_then(|m| m.filter_metadata.get(ATTEMPT_METADATA_NAMESPACE))
        .and_then(|ns| ns.fields.get(ATTEMPT_ORIGINALS_KEY))
        .and_then(|v| v.kind.as_ref())
    else {
        return BTreeMap::new();
    };
    originals
        .fields
        .iter()
        .map(|(name, value)| {
            let value = match &value.kind {
                Some(Kind::StringValue(v)) => Some(v.clone()),
                _ => None,
            };
            (name.clone(), value)
        })
        .collect()
}

/// The request headers as they were before the first attempt changed them.
fn restore_headers(
    headers: &mut Vec<(String, String)>,
    originals: &BTreeMap<String, Option<String>>,
) {
    for (name, original) in originals {
        headers.retain(|(k, _)| k != name);
        if let Some(value) = original {
            headers.push((name.clone(), value.clone()));
        }
    }
}

/// Makes one attempt's header mutation start from the request as the client's router left it:
/// every header an earlier attempt changed and this one does not is put back (or removed, when
/// it was absent). `headers` are the restored request headers; the headers this attempt touches
/// for the first time are added to `originals`, which is returned as the metadata value the
/// next attempt reads.
fn undo_earlier_attempts(
    headers: &[(String, String)],
    originals: &mut BTreeMap<String, Option<String>>,
    set: &mut Vec<HeaderValueOption>,
    remove: &mut Vec<String>,
) -> PbValue {
    let touched: std::collections::BTreeSet<String> = set
        .iter()
        .filter_map(|h| h.header.as_ref().map(|h| h.key.to_ascii_lowercase()))
        .chain(remove.iter().map(|name| name.to_ascii_lowercase()))
        .collect();
    for (name, original) in originals.iter() {
        if touched.contains(name) {
            continue;
        }
        match original {
            Some(value) => set.push(header_value(name, value)),
            None => remove.push(name.clone()),
        }
    }
    for name in touched {
        originals.entry(name).or_insert_with_key(|name| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        });
    }
    PbValue {
        kind: Some(Kind::StructValue(Struct {
            fields: originals
                .iter()
                .map(|(name, value)| {
                    let kind = match value {
                        Some(v) => Kind::StringValue(v.clone()),
                        None => Kind::NullValue(0),
                    };
                    (name.clone(), PbValue { kind: Some(kind) })
                })
                .collect(),
        })),
    }
}

fn set_metadata(response: &mut ProcessingResponse, key: &str, value: PbValue) {
    let outer = response
        .dynamic_metadata
        .get_or_insert_with(Struct::default);
    let namespace = outer
        .fields
        .entry(METADATA_NAMESPACE.to_string())
        .or_insert_with(|| PbValue {
            kind: Some(Kind::StructValue(Struct::default())),
        });
    if let Some(Kind::StructValue(inner)) = &mut namespace.kind {
        inner.fields.insert(key.to_string(), value);
    } else {
        *namespace = PbValue {
            kind: Some(Kind::StructValue(Struct {
                fields: [(key.to_string(), value)].into_iter().collect(),
            })),
        };
    }
}

fn string_value(value: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

fn number_value(value: f64) -> PbValue {
    PbValue {
        kind: Some(Kind::NumberValue(value)),
    }
}

/// The facts of the attempt that answered, as dynamic metadata.
fn attempt_metadata(selection: &Selection, route: &str) -> Struct {
    let spec = &selection.backend.spec;
    metadata_struct(BTreeMap::from([
        ("backend_name".to_string(), string_value(&spec.name)),
        (
            "ai_service_backend_name".to_string(),
            string_value(&spec.service_backend),
        ),
        (
            "model_name_override".to_string(),
            string_value(&selection.request_model),
        ),
        ("route_name".to_string(), string_value(route)),
    ]))
}

/// Adds the fields of `extra` (a metadata struct) to the response's metadata.
fn merge_metadata(response: &mut ProcessingResponse, extra: Struct) {
    for (namespace, value) in extra.fields {
        if let Some(Kind::StructValue(inner)) = value.kind {
            for (key, value) in inner.fields {
                if namespace == METADATA_NAMESPACE {
                    set_metadata(response, &key, value);
                }
            }
        }
    }
}

/// A string attribute Envoy sent with the message (`request_attributes` or
/// `response_attributes`), under whatever filter name.
fn attribute(request: &ProcessingRequest, name: &str) -> Option<String> {
    request
        .attributes
        .values()
        .find_map(|attributes| attributes.fields.get(name))
        .and_then(|value| match &value.kind {
            Some(Kind::StringValue(text)) => Some(text.clone()),
            _ => None,
        })
}

/// The `region` of a locality attribute, which Envoy sends as the Locality message in text
/// form: `region: "httproute/ns/name/rule/0/backend/1"`.
fn locality_region(text: &str) -> Option<&str> {
    let start = text.find("region: \"")? + "region: \"".len();
    let rest = &text[start..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

impl Processor {
    /// A processor for one stream, reading `config` for its whole life.
    pub fn new(config: Arc<RuntimeConfig>, metrics: Arc<Metrics>) -> Self {
        Self::with_role(config, metrics, Role::Router)
    }

    /// A processor for a stream opened by the filter in `role`.
    pub fn with_role(config: Arc<RuntimeConfig>, metrics: Arc<Metrics>, role: Role) -> Self {
        Processor {
            config,
            metrics,
            started: Instant::now(),
            endpoint: None,
            path: String::new(),
            authority: String::new(),
            metadata: None,
            host: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            selection: None,
            pending: None,
            response: ResponseState::default(),
            answered: false,
            role,
            locality: None,
            originals: BTreeMap::new(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request path without its query string, for messages: a query may carry a key.
    fn path_for_messages(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    fn client_error(&self, status: u16, message: &str, code: &str) -> ProcessingResponse {
        error_response(status, message, code, self.anthropic_errors())
    }

    /// True when errors go back in Anthropic's shape (the Messages API).
    fn anthropic_errors(&self) -> bool {
        self.endpoint.is_some_and(Endpoint::anthropic_errors)
    }

    /// Answers the client with a provider failure (502) instead of the provider's response,
    /// which must not reach the client; records the failure.
    fn bad_upstream(&mut self, message: &str) -> ProcessingResponse {
        tracing::warn!(path = %self.path_for_messages(), "{message}");
        self.response.status = 502;
        let mut response = self.client_error(502, message, "bad_upstream_response");
        response.dynamic_metadata = self.finish();
        self.answered = true;
        response
    }

    /// A translation failure as the client's answer: the backend cannot express it (422), or
    /// the request is not what the endpoint takes (400).
    fn translate_error(&self, err: &TranslateError) -> ProcessingResponse {
        match err {
            TranslateError::Unsupported(reason) => self.client_error(422, reason, "untranslatable"),
            TranslateError::Invalid(reason) => self.client_error(
                400,
                &format!("invalid request body: {reason}"),
                "invalid_request",
            ),
            TranslateError::Upstream(reason) => self.client_error(502, reason, "upstream_error"),
        }
    }

    /// Handles one message.
    pub fn handle(&mut self, request: ProcessingRequest) -> ProcessingResponse {
        let mut response = self.dispatch(request);
        if matches!(
            response.response,
            Some(processing_response::Response::ImmediateResponse(_))
        ) {
            // Envoy reshapes its own error replies to AI requests; this one is already shaped.
            set_metadata(&mut response, ERROR_SHAPE_KEY, string_value(""));
        }
        response
    }

    fn dispatch(&mut self, request: ProcessingRequest) -> ProcessingResponse {
        if let Some(locality) = attribute(&request, "upstream.locality") {
            self.locality = locality_region(&locality).map(str::to_string);
        }
        if let Some(metadata) = request.metadata_context
            && !metadata.filter_metadata.is_empty()
        {
            self.metadata = Some(metadata);
        }
        match request.request {
            Some(processing_request::Request::RequestHeaders(headers)) => {
                self.on_request_headers(&headers)
            }
            Some(processing_request::Request::RequestBody(body)) => self.on_request_body(body),
            Some(processing_request::Request::ResponseHeaders(headers)) => {
                self.on_response_headers(&headers)
            }
            Some(processing_request::Request::ResponseBody(body)) => self.on_response_body(body),
            Some(processing_request::Request::RequestTrailers(_)) => ProcessingResponse {
                response: Some(processing_response::Response::RequestTrailers(
                    TrailersResponse::default(),
                )),
                ..Default::default()
            },
            Some(processing_request::Request::ResponseTrailers(_)) => ProcessingResponse {
                response: Some(processing_response::Response::ResponseTrailers(
                    TrailersResponse::default(),
                )),
                ..Default::default()
            },
            None => ProcessingResponse::default(),
        }
    }

    fn on_request_headers(&mut self, headers: &HttpHeaders) -> ProcessingResponse {
        self.headers = read_headers(headers);
        if self.role == Role::Upstream {
            self.originals = attempt_originals(self.metadata.as_ref());
            restore_headers(&mut self.headers, &self.originals);
        }
        self.path = self.header(":path").unwrap_or_default().to_string();
        // In a rule cluster, `:authority` names the rule's virtual host; the client's travels
        // in a header of its own.
        let client = match self.role {
            Role::Upstream => self.header(CLIENT_AUTHORITY_HEADER),
            Role::Router => None,
        };
        let authority = client
            .or_else(|| self.header(":authority"))
            .or_else(|| self.header("host"))
            .unwrap_or_default();
        self.authority = authority.to_string();
        let authority = self.authority.as_str();
        self.host = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(h, _)| h)
            .to_ascii_lowercase();
        let Some(endpoint) = Endpoint::from_path(&self.path) else {
            self.answered = true;
            return self.client_error(
                404,
                &format!("unsupported path: {}", self.path_for_messages()),
                "unsupported_path",
            );
        };
        self.endpoint = Some(endpoint);
        if endpoint.is_local() {
            self.answered = true;
            return self.models(endpoint);
        }
        let method = self.header(":method").unwrap_or_default().to_string();
        if method != "POST" {
            self.answered = true;
            return self.client_error(
                405,
                &format!("{} accepts POST, not {method}", self.path_for_messages()),
                "method_not_allowed",
            );
        }
        if headers.end_of_stream {
            self.answered = true;
            return self.client_error(
                400,
                "the request has no body; send a JSON body",
                "missing_body",
            );
        }
        let multipart = self.header("content-type").is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        });
        if multipart != endpoint.multipart() {
            self.answered = true;
            let message = if multipart {
                format!(
                    "{} takes a JSON body, not multipart",
                    self.path_for_messages()
                )
            } else {
                format!(
                    "{} takes a multipart/form-data body",
                    self.path_for_messages()
                )
            };
            return self.client_error(400, &message, "invalid_content_type");
        }
        let mut response = headers_response(CommonResponse::default());
        let shape = if self.anthropic_errors() {
            "anthropic"
        } else {
            "openai"
        };
        set_metadata(&mut response, ERROR_SHAPE_KEY, string_value(shape));
        response
    }

    fn models(&self, endpoint: Endpoint) -> ProcessingResponse {
        let mut models: Vec<&aigw_filterconfig::Model> = Vec::new();
        for route in router::candidates(&self.config, &self.host) {
            for model in &route.models {
                if !models.iter().any(|m| m.id == model.id) {
                    models.push(model);
                }
            }
        }
        let body = if endpoint == Endpoint::AnthropicModels {
            let data: Vec<Value> = models
                .iter()
                .map(|m| json!({"id": m.id, "type": "model", "display_name": m.id, "created_at": format_rfc3339(m.created)}))
                .collect();
            json!({
                "data": data,
                "first_id": models.first().map(|m| m.id.clone()),
                "last_id": models.last().map(|m| m.id.clone()),
                "has_more": false,
            })
        } else {
            let data: Vec<Value> =
                models.iter().map(|m| json!({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by})).collect();
            json!({"object": "list", "data": data})
        };
        immediate(200, body.to_string().into_bytes(), "models")
    }

    fn on_request_body(&mut self, body: HttpBody) -> ProcessingResponse {
        if self.answered {
            return body_response(CommonResponse::default(), true);
        }
        self.body.extend_from_slice(&body.body);
        let limit = self.config.max_request_body_bytes;
        if self.body.len() as u64 > limit {
            self.answered = true;
            return self.client_error(
                413,
                &format!("the request body is larger than the limit of {limit} bytes"),
                "request_too_large",
            );
        }
        if !body.end_of_stream {
            return body_response(CommonResponse::default(), true);
        }
        let result = match self.role {
            Role::Router => self.route_request(),
            Role::Upstream => self.attempt_request(),
        };
        match result {
            Ok(response) => response,
            Err(response) => {
                self.answered = true;
                *response
            }
        }
    }

    /// The JSON body and its `model`.
    fn read_json(&self) -> Result<(Value, String), Box<ProcessingResponse>> {
        let request: Value = serde_json::from_slice(&self.body).map_err(|err| {
            Box::new(self.client_error(
                400,
                &format!(
                    "malformed request: failed to parse JSON for {}: {err}",
                    self.path_for_messages()
                ),
                "invalid_json",
            ))
        })?;
        if !request.is_object() {
            return Err(Box::new(self.client_error(
                400,
                "malformed request: the body must be a JSON object",
                "invalid_json",
            )));
        }
        let model = match request.get("model") {
            None | Some(Value::Null) => {
                return Err(Box::new(self.client_error(
                    400,
                    "missing required field: model",
                    "missing_model",
                )));
            }
            Some(Value::String(model)) => model.clone(),
            Some(other) => {
                let kind = match other {
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::Array(_) => "an array",
                    _ => "an object",
                };
                return Err(Box::new(self.client_error(
                    400,
                    &format!("invalid model: must be a string, not {kind}"),
                    "invalid_model",
                )));
            }
        };
        check_model(&model).map_err(|reason| {
            Box::new(self.client_error(400, &format!("invalid model: {reason}"), "invalid_model"))
        })?;
        Ok((request, model))
    }

    /// The parts of a form body, its `model` and whether it asks for a stream.
    fn read_form(&self) -> Result<(Vec<multipart::Part>, String, bool), Box<ProcessingResponse>> {
        let bad = |message: String| Box::new(self.client_error(400, &message, "invalid_form"));
        let boundary = self
            .header("content-type")
            .and_then(multipart::boundary)
            .ok_or_else(|| bad("multipart/form-data without a boundary".to_string()))?;
        let parts = multipart::parse(&self.body, &boundary)
            .map_err(|err| bad(format!("malformed request: {err}")))?;
        let model = multipart::text_field(&self.body, &parts, "model")
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| bad("missing required field: model".to_string()))?;
        check_model(&model).map_err(|reason| bad(format!("invalid model: {reason}")))?;
        let stream = multipart::text_field(&self.body, &parts, "stream")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Ok((parts, model, stream))
    }

    /// The request body read: a JSON object with its `model`, or a form.
    fn parse(&self) -> Result<Parsed, Box<ProcessingResponse>> {
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        // Audio uploads are forms: routed on their `model` field, forwarded byte for byte.
        let form = if endpoint.multipart() {
            Some(self.read_form()?)
        } else {
            None
        };
        let (request, model) = match &form {
            Some((_, model, _)) => (Value::Object(serde_json::Map::new()), model.clone()),
            None => self.read_json()?,
        };
        let stream = match &form {
            Some((_, _, stream)) => *stream,
            None => request
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        Ok(Parsed {
            form,
            request,
            model,
            stream,
        })
    }

    /// The route and rule serving the request: `(route index, rule index)`.
    fn select_rule(&self, parsed: &Parsed) -> Result<(usize, usize), Box<ProcessingResponse>> {
        let model = parsed.model.as_str();
        let headers = &self.headers;
        let lookup = |name: &str| -> Option<&str> {
            if name == MODEL_HEADER {
                return Some(model);
            }
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        router::select(&self.config, &self.host, model, lookup).ok_or_else(|| {
            Box::new(self.client_error(
                404,
                &format!("model {model:?} is not served by this gateway"),
                "model_not_found",
            ))
        })
    }

    /// The request on the router: the rule chosen; then either Envoy picks the backend (the
    /// rule has a cluster: only the rule is selected here, and each attempt is translated by
    /// the extproc in the cluster), or the backend is picked and the request translated here.
    fn route_request(&mut self) -> Result<ProcessingResponse, Box<ProcessingResponse>> {
        let parsed = self.parse()?;
        let (route_index, rule_index) = self.select_rule(&parsed)?;
        let config = self.config.clone();
        let Some((route, rule)) = config
            .routes
            .get(route_index)
            .and_then(|route| Some((route, route.rules.get(rule_index)?)))
        else {
            return Err(Box::new(self.client_error(
                500,
                "internal error: the selected rule is missing",
                "internal",
            )));
        };
        let model = parsed.model.clone();
        if let Some(cluster) = &rule.cluster {
            if !rule.backends.iter().any(|(_, weight, _)| *weight > 0) {
                return Err(Box::new(self.no_backend(&model)));
            }
            self.pending = Some(Pending {
                route: route_index,
                rule: rule_index,
                parsed,
            });
            let mut set = vec![
                header_value(MODEL_HEADER, &model),
                header_value(SELECTED_RULE_HEADER, cluster),
            ];
            if let Some(authority) = &rule.authority {
                set.push(header_value(CLIENT_AUTHORITY_HEADER, &self.authority));
                set.push(header_value(":authority", authority));
            }
            let common = CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: set,
                    remove_headers: self.client_credentials_for(rule),
                }),
                clear_route_cache: true,
                ..Default::default()
            };
            let mut response = body_response(common, true);
            set_metadata(&mut response, "route_name", string_value(&route.name));
            return Ok(response);
        }
        let Some(backend) = router::pick(&rule.backends, fastrand::f64()).cloned() else {
            return Err(Box::new(self.no_backend(&model)));
        };
        let prepared = self.prepare(parsed, route_index, &backend)?;
        let mut set = prepared.set;
        set.push(header_value(SELECTED_BACKEND_HEADER, &backend.spec.name));
        if let Some(authority) = &rule.authority {
            // Envoy finds the route's rules by virtual host; a Backend without a hostname
            // gets the client's Host back from the header (the route's host rewrite).
            set.push(header_value(":authority", authority));
            if backend.spec.upstream_host.is_none() {
                set.push(header_value(CLIENT_AUTHORITY_HEADER, &self.authority));
            }
        }
        let metadata = attempt_metadata(&prepared.selection, &route.name);
        self.selection = Some(prepared.selection);
        let common = CommonResponse {
            header_mutation: Some(HeaderMutation {
                set_headers: set,
                remove_headers: prepared.remove,
            }),
            body_mutation: prepared.body,
            clear_route_cache: true,
            ..Default::default()
        };
        let mut response = body_response(common, true);
        response.dynamic_metadata = Some(metadata);
        Ok(response)
    }

    /// The client's credential headers, when every backend of `rule` sends its own: removed
    /// on the router already, so that they reach no provider even if an attempt is not
    /// processed (a cluster missing its extproc filter). Headers a backend reads per-request
    /// credentials from stay.
    fn client_credentials_for(&self, rule: &crate::config::Rule) -> Vec<String> {
        let backends = || rule.backends.iter().filter(|(_, w, _)| *w > 0);
        if !backends().all(|(b, _, _)| b.auth.is_some()) {
            return Vec::new();
        }
        let read: Vec<String> = backends()
            .filter_map(|(b, _, _)| b.auth.as_ref())
            .flat_map(|a| a.override_headers())
            .collect();
        CLIENT_CREDENTIAL_HEADERS
            .iter()
            .filter(|h| self.header(h).is_some() && !read.iter().any(|r| r == *h))
            .map(|h| h.to_string())
            .collect()
    }

    fn no_backend(&self, model: &str) -> ProcessingResponse {
        self.client_error(
            503,
            &format!("no backend with a positive weight serves model {model:?}"),
            "no_backend",
        )
    }

    /// One attempt, in the extproc of a rule cluster: the request translated, overridden,
    /// mutated and signed for the backend of the locality Envoy chose for this attempt.
    fn attempt_request(&mut self) -> Result<ProcessingResponse, Box<ProcessingResponse>> {
        let parsed = self.parse()?;
        let config = self.config.clone();
        let Some((route_index, backend)) = self
            .locality
            .as_deref()
            .and_then(|locality| config.localities.get(locality))
        else {
            let locality = self.locality.as_deref().unwrap_or("none");
            tracing::warn!(%locality, "an attempt reached a locality the configuration does not name");
            return Err(Box::new(self.client_error(
                500,
                &format!(
                    "internal error: the attempt reached locality {}, which this gateway's configuration does not name",
                    truncate_message(locality)
                ),
                "unknown_backend",
            )));
        };
        let prepared = self.prepare(parsed, *route_index, backend)?;
        let mut set = prepared.set;
        let mut remove = prepared.remove;
        remove.push(SELECTED_RULE_HEADER.to_string());
        let client = self.header(CLIENT_AUTHORITY_HEADER).map(str::to_string);
        if let Some(client) = &client {
            remove.push(CLIENT_AUTHORITY_HEADER.to_string());
            // Envoy's host rewrite named the rule's virtual host as the host it replaced.
            if let Some(forwarded) = self.header("x-forwarded-host") {
                let forwarded = restore_forwarded_host(forwarded, client);
                set.push(header_value("x-forwarded-host", &forwarded));
            }
        }
        if let Some(host) = backend.spec.upstream_host.as_ref().or(client.as_ref()) {
            // One cluster spans the rule's Backends: the Host is the attempt's, or the
            // client's for a Backend without a hostname.
            set.push(header_value(":authority", host));
        }
        let originals =
            undo_earlier_attempts(&self.headers, &mut self.originals, &mut set, &mut remove);
        let common = CommonResponse {
            header_mutation: Some(HeaderMutation {
                set_headers: set,
                remove_headers: remove,
            }),
            body_mutation: prepared.body,
            ..Default::default()
        };
        let mut response = body_response(common, true);
        let outer = response
            .dynamic_metadata
            .get_or_insert_with(Struct::default);
        outer.fields.insert(
            ATTEMPT_METADATA_NAMESPACE.to_string(),
            PbValue {
                kind: Some(Kind::StructValue(Struct {
                    fields: [(ATTEMPT_ORIGINALS_KEY.to_string(), originals)].into(),
                })),
            },
        );
        Ok(response)
    }

    /// On the router, when the response of a rule with a cluster arrives: the backend that
    /// answered (the locality of the last attempt), and the request as it was translated for
    /// it, to translate the answer back. A reply Envoy made itself (no upstream answered) is
    /// counted against the rule's preferred backend.
    fn resolve_attempt(&mut self, pending: Pending) {
        let config = self.config.clone();
        let answered = self
            .locality
            .as_deref()
            .and_then(|locality| config.localities.get(locality))
            .filter(|(route, _)| *route == pending.route)
            .map(|(_, backend)| backend.clone());
        let backend = answered.or_else(|| {
            let rule = config.routes.get(pending.route)?.rules.get(pending.rule)?;
            router::pick(&rule.backends, 0.0).cloned()
        });
        let Some(backend) = backend else {
            return;
        };
        let prepared = self.prepare(pending.parsed, pending.route, &backend);
        match prepared {
            Ok(prepared) => self.selection = Some(prepared.selection),
            Err(_) => {
                tracing::warn!(backend = %backend.spec.name, "the answered request could not be prepared again; its response passes as it is");
            }
        }
    }

    /// The request as `backend` must receive it: translated, model overridden, mutations
    /// applied, credentials added; and what the response side needs to translate it back.
    fn prepare(
        &self,
        parsed: Parsed,
        route_index: usize,
        backend: &Arc<Backend>,
    ) -> Result<Prepared, Box<ProcessingResponse>> {
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        let config = self.config.clone();
        let Parsed {
            form,
            mut request,
            model,
            stream,
        } = parsed;
        let spec = &backend.spec;
        let request_model = spec
            .model_name_override
            .clone()
            .unwrap_or_else(|| model.clone());

        let mut translator = crate::translate::select(&spec.schema, endpoint)
            .map_err(|err| Box::new(self.translate_error(&err)))?;
        let mut changed = false;
        let mut translated_body: Option<Vec<u8>> = None;
        if let Some((parts, _, _)) = &form {
            if translator.is_some() {
                return Err(Box::new(self.client_error(
                    422,
                    &format!(
                        "a {} backend cannot serve {}",
                        spec.schema.name.as_str(),
                        endpoint.path()
                    ),
                    "untranslatable",
                )));
            }
            if request_model != model {
                translated_body =
                    multipart::replace_field(&self.body, parts, "model", &request_model);
            }
        } else if request_model != model {
            request["model"] = Value::String(request_model.clone());
            changed = true;
        }
        // Costs need usage, which OpenAI streams only report when asked.
        if stream
            && endpoint == Endpoint::ChatCompletions
            && config.has_costs
            && translator.is_none()
        {
            let include = request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool);
            if include != Some(true) {
                if !request.get("stream_options").is_some_and(Value::is_object) {
                    request["stream_options"] = json!({});
                }
                request["stream_options"]["include_usage"] = Value::Bool(true);
                changed = true;
            }
        }
        // Translate to the backend's API first; configured body mutations apply to what is
        // sent upstream, as upstream does.
        let mut extra_headers: Vec<(String, String)> = Vec::new();
        let mut upstream_path = match &mut translator {
            None => upstream_path(&spec.schema, endpoint, &request_model),
            Some(translator) => {
                let ctx = RequestContext {
                    model: &request_model,
                    stream,
                    headers: &self.headers,
                };
                let upstream = translator
                    .request(&request, &ctx)
                    .map_err(|err| Box::new(self.translate_error(&err)))?;
                extra_headers = upstream.headers;
                if spec.body_mutation.is_some() {
                    // Mutations apply to the translated body: read it back only then.
                    request = serde_json::from_slice(&upstream.body).map_err(|err| {
                        Box::new(self.client_error(
                            500,
                            &format!("internal error: translated body is not JSON: {err}"),
                            "internal",
                        ))
                    })?;
                    changed = true;
                } else {
                    translated_body = Some(upstream.body);
                }
                upstream.path
            }
        };
        // Body mutations name JSON fields; forms pass as they are.
        if let Some(mutation) = &spec.body_mutation
            && form.is_none()
            && let Some(object) = request.as_object_mut()
        {
            for field in &mutation.remove {
                changed |= object.remove(field).is_some();
            }
            for field in &mutation.set {
                // A value that is not JSON is taken as a string, as upstream does.
                let value = serde_json::from_str::<Value>(&field.value)
                    .unwrap_or_else(|_| Value::String(field.value.clone()));
                object.insert(field.path.clone(), value);
                changed = true;
            }
        }

        let mut set = vec![header_value(MODEL_HEADER, &model)];
        for (name, value) in &extra_headers {
            set.push(header_value(name, value));
        }
        let mut remove = Vec::new();
        // The extproc reads every answer (usage, translation): ask the provider for identity
        // encoding rather than decompress. Envoy's compressor can still compress for clients.
        if self.header("accept-encoding").is_some() {
            remove.push("accept-encoding".to_string());
        }
        if let Some(mutation) = &spec.header_mutation {
            for name in &mutation.remove {
                if !protected(name) && self.header(name).is_some() {
                    remove.push(name.clone());
                }
            }
            for header in &mutation.set {
                if !protected(&header.name) {
                    set.push(header_value(&header.name, &header.value));
                }
            }
        }
        let bytes = match translated_body {
            Some(bytes) => Some(bytes),
            None if changed => {
                Some(serde_json::to_vec(&request).unwrap_or_else(|_| self.body.clone()))
            }
            None => None,
        };
        let mut sent_secrets = Vec::new();
        if let Some(credential) = &backend.auth {
            // The Host the provider receives: the Backend's hostname when Envoy rewrites to
            // it, else the client's authority, which Envoy forwards unchanged.
            let host = spec.upstream_host.as_deref().unwrap_or(&self.authority);
            let call = UpstreamCall {
                method: "POST",
                host,
                path: &upstream_path,
                body: bytes.as_deref().unwrap_or(&self.body),
                headers: &self.headers,
                metadata: self.metadata.as_ref(),
            };
            let applied = credential.apply(&call).map_err(|err| {
                if let AuthError::Unavailable(reason) = &err {
                    tracing::warn!(backend = %spec.name, reason = %reason, "no credential for the upstream request");
                }
                Box::new(self.client_error(err.status(), &err.to_string(), auth_error_code(&err)))
            })?;
            if let Some(path) = applied.path {
                upstream_path = path;
            }
            let own: Vec<&str> = applied.headers.iter().map(|(n, _)| n.as_str()).collect();
            // The client's own credentials are for the gateway, never for the provider.
            for client_credential in CLIENT_CREDENTIAL_HEADERS {
                if !own.contains(&client_credential)
                    && self.header(client_credential).is_some()
                    && !remove.iter().any(|r| r == client_credential)
                {
                    remove.push(client_credential.to_string());
                }
            }
            for name in credential.override_headers() {
                if self.header(&name).is_some() && !remove.contains(&name) {
                    remove.push(name);
                }
            }
            for (name, value) in &applied.headers {
                set.push(header_value(name, value));
                if !name.starts_with("x-amz-date") {
                    let value = value.strip_prefix("Bearer ").unwrap_or(value);
                    sent_secrets.push(Secret::new(value));
                }
            }
        }
        if !upstream_path.starts_with('/') {
            // Vertex AI paths are relative to the project and location of the GCP credential.
            return Err(Box::new(self.client_error(
                500,
                &format!(
                    "backend {} ({}) needs a BackendSecurityPolicy of type GCPCredentials, which names the project and region",
                    spec.service_backend,
                    spec.schema.name.as_str()
                ),
                "missing_credential",
            )));
        }
        if upstream_path != self.path {
            set.push(header_value(":path", &upstream_path));
        }
        let body_mutation = if let Some(bytes) = bytes {
            set.push(header_value("content-length", &bytes.len().to_string()));
            Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::Body(bytes)),
            })
        } else {
            None
        };
        let selection = Selection {
            route: route_index,
            backend: backend.clone(),
            original_model: model,
            request_model,
            stream,
            translator,
            sent_secrets,
        };
        Ok(Prepared {
            selection,
            set,
            remove,
            body: body_mutation,
        })
    }

    fn on_response_headers(&mut self, message: &HttpHeaders) -> ProcessingResponse {
        let headers = read_headers(message);
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        self.response.status = status;
        let resolved = self.pending.take().map(|pending| {
            self.resolve_attempt(pending);
            self.selection.as_ref().and_then(|selection| {
                let route = self.config.routes.get(selection.route)?;
                Some(attempt_metadata(selection, &route.name))
            })
        });
        let mut common = CommonResponse::default();
        let mut mode_override = None;
        let success = (200..300).contains(&status);
        if !self.answered && self.selection.is_some() && success {
            let content_type = headers
                .iter()
                .find(|(k, _)| k == "content-type")
                .map(|(_, v)| v.trim_start().to_ascii_lowercase());
            let event_stream = content_type.as_deref().is_some_and(|v| {
                v.starts_with("text/event-stream")
                    || v.starts_with("application/vnd.amazon.eventstream")
            });
            let asked_stream = self.selection.as_ref().is_some_and(|s| s.stream);
            if message.end_of_stream {
                // Every endpoint answers with a body; an empty success is a provider fault.
                return self.bad_upstream(&format!(
                    "the provider answered {status} with an empty body"
                ));
            }
            if asked_stream && !event_stream {
                return self.bad_upstream(&format!(
                    "the provider answered a streaming request with {} instead of an event stream",
                    content_type.as_deref().unwrap_or("no content type")
                ));
            }
            if event_stream {
                // Streamed: every chunk goes to the client as soon as it arrives.
                self.response.streaming = true;
                let mut set_headers = Vec::new();
                if let Some(selection) = &self.selection
                    && let Some(translator) = &selection.translator
                {
                    let ctx = ResponseContext {
                        model: &selection.request_model,
                        headers: &headers,
                    };
                    self.response.translator = Some(translator.stream(&ctx));
                    set_headers.push(header_value("content-type", "text/event-stream"));
                }
                mode_override = Some(ProcessingMode {
                    response_body_mode: BodySendMode::Streamed as i32,
                    ..Default::default()
                });
                common.header_mutation = Some(HeaderMutation {
                    set_headers,
                    remove_headers: vec!["content-length".into()],
                });
            }
        }
        self.response.headers = headers;
        let mut response = ProcessingResponse {
            response: Some(processing_response::Response::ResponseHeaders(
                HeadersResponse {
                    response: Some(common),
                },
            )),
            mode_override,
            ..Default::default()
        };
        if message.end_of_stream {
            response.dynamic_metadata = self.finish();
        }
        if let Some(Some(attempt)) = resolved {
            merge_metadata(&mut response, attempt);
        }
        response
    }

    fn on_response_body(&mut self, body: HttpBody) -> ProcessingResponse {
        if self.answered || self.selection.is_none() || self.response.finished {
            return response_body_response(CommonResponse::default());
        }
        if self.response.first_chunk.is_none() && !body.body.is_empty() {
            self.response.first_chunk = Some(Instant::now());
        }
        if self.response.streaming {
            let mut common = CommonResponse::default();
            if let Some(translator) = self.response.translator.as_mut() {
                // Each complete provider event becomes OpenAI chunks at once; a partial one waits.
                let anthropic = self.endpoint.is_some_and(Endpoint::anthropic_errors);
                let mut out = translator.feed(&body.body).unwrap_or_else(|err| {
                    tracing::warn!(error = %err, "streamed response could not be translated");
                    if anthropic {
                        crate::translate::anthropic::messages_sse_event(&json!({"type": "error", "error": {"type": "api_error", "message": err.to_string()}}))
                    } else {
                        crate::translate::sse_event(&json!({"error": {"message": err.to_string(), "type": "upstream_error"}}))
                    }
                });
                if body.end_of_stream {
                    match translator.finish() {
                        Ok(rest) => out.extend(rest),
                        Err(err) => {
                            tracing::warn!(error = %err, "streamed response ended badly");
                        }
                    }
                }
                // Events sent, for the inter-token latency. The translator already read usage
                // and model: its output is counted, not parsed again.
                let events = memchr::memmem::find_iter(&out, b"\n\n").count();
                let done = memchr::memmem::find_iter(&out, b"data: [DONE]").count();
                self.response.stream.events += events.saturating_sub(done) as u64;
                let secrets = self.selection.as_ref().map(|s| s.sent_secrets.as_slice());
                let out = scrub(&out, secrets.unwrap_or_default()).unwrap_or(out);
                common.body_mutation = Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::Body(out)),
                });
            } else {
                self.response.stream.feed(&body.body);
                // A credential echoed inside an event (an error event) never reaches the
                // client; the chunk passes untouched otherwise.
                let secrets = self.selection.as_ref().map(|s| s.sent_secrets.as_slice());
                if let Some(clean) = scrub(&body.body, secrets.unwrap_or_default()) {
                    common.body_mutation = Some(BodyMutation {
                        mutation: Some(body_mutation::Mutation::Body(clean)),
                    });
                }
            }
            let mut response = response_body_response(common);
            response.dynamic_metadata = if body.end_of_stream {
                self.finish()
            } else {
                self.interim_costs()
            };
            return response;
        }
        self.response.body.extend_from_slice(&body.body);
        if !body.end_of_stream {
            return response_body_response(CommonResponse::default());
        }
        let mut common = CommonResponse::default();
        let status = self.response.status;
        let success = (200..300).contains(&status);
        if success && self.response.body.is_empty() {
            return self.bad_upstream(&format!(
                "the provider answered {status} with an empty body"
            ));
        }
        // A provider that echoes the credential in an error never gets it to the client.
        let redacted = status >= 400 && self.redact_credentials();
        if let Some(selection) = &self.selection
            && let Some(translator) = &selection.translator
        {
            let ctx = ResponseContext {
                model: &selection.request_model,
                headers: &self.response.headers,
            };
            let bytes = if success {
                match translator.response(&self.response.body, &ctx) {
                    Ok(translated) => {
                        self.response.translated = Some((translated.usage, translated.model));
                        translated.body
                    }
                    Err(err) => {
                        return self.bad_upstream(&format!(
                            "the provider's answer could not be translated: {err}"
                        ));
                    }
                }
            } else {
                translator.error(status, &self.response.body, &ctx)
            };
            let set_headers = vec![
                header_value("content-type", "application/json"),
                header_value("content-length", &bytes.len().to_string()),
            ];
            common.header_mutation = Some(HeaderMutation {
                set_headers,
                remove_headers: vec!["content-encoding".into()],
            });
            common.body_mutation = Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::Body(bytes)),
            });
        } else if success {
            // Passed through as it is: an endpoint that answers JSON must get a JSON object.
            let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
            if endpoint.answers_json() {
                match serde_json::from_slice::<Value>(&self.response.body) {
                    Ok(value) if value.is_object() => {
                        self.response.translated = Some(usage::from_value(&value));
                    }
                    _ => {
                        return self.bad_upstream(&format!(
                            "the provider answered {status} with a body that is not a JSON object"
                        ));
                    }
                }
            }
        } else if status >= 400 {
            // Keep the provider's JSON error as it is; wrap anything else in the client's shape.
            let is_json =
                serde_json::from_slice::<Value>(&self.response.body).is_ok_and(|v| v.is_object());
            if is_json && redacted {
                let bytes = self.response.body.clone();
                common.header_mutation = Some(HeaderMutation {
                    set_headers: vec![header_value("content-length", &bytes.len().to_string())],
                    remove_headers: vec!["content-encoding".into()],
                });
                common.body_mutation = Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::Body(bytes)),
                });
            } else if !is_json {
                let text = String::from_utf8_lossy(&self.response.body)
                    .trim()
                    .to_string();
                let message = if text.is_empty() {
                    "the upstream provider returned an error with no body".to_string()
                } else {
                    truncate_message(&text)
                };
                let bytes = error_body(
                    status,
                    &message,
                    &status.to_string(),
                    self.anthropic_errors(),
                );
                common.header_mutation = Some(HeaderMutation {
                    set_headers: vec![
                        header_value("content-type", "application/json"),
                        header_value("content-length", &bytes.len().to_string()),
                    ],
                    remove_headers: vec!["content-encoding".into()],
                });
                common.body_mutation = Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::Body(bytes)),
                });
            }
        }
        let mut response = response_body_response(common);
        response.dynamic_metadata = self.finish();
        response
    }

    /// Replaces every credential value this request sent upstream, should the provider's
    /// answer echo it, with `<redacted>`; true when something was replaced.
    fn redact_credentials(&mut self) -> bool {
        let Some(selection) = &self.selection else {
            return false;
        };
        match scrub(&self.response.body, &selection.sent_secrets) {
            Some(clean) => {
                self.response.body = clean;
                true
            }
            None => false,
        }
    }

    /// End of the response: costs into metadata, measurements into metrics. Runs once.
    /// The costs of the usage a stream has reported so far, when it changed with this chunk.
    /// Envoy charges response costs when the stream ends, from the metadata it has by then: a
    /// client that hangs up after the usage event (the openai SDK closes the connection at
    /// `[DONE]`, before the provider's stream ends) is charged all the same.
    fn interim_costs(&mut self) -> Option<Struct> {
        if !(200..300).contains(&self.response.status) {
            return None;
        }
        let usage = match &self.response.translator {
            Some(translator) => translator.usage(),
            None => self.response.stream.usage,
        };
        if usage == self.response.charged {
            return None;
        }
        self.response.charged = usage;
        // Errors are logged once, when the stream ends.
        let (values, _) = self.costs(usage)?;
        if values.is_empty() {
            return None;
        }
        let fields = values
            .into_iter()
            .map(|(key, value)| (key, number_value(value as f64)))
            .collect();
        Some(metadata_struct(fields))
    }

    /// The costs of `usage` for the selected route and backend, with the errors of the
    /// expressions that could not be evaluated.
    fn costs(&self, usage: TokenUsage) -> Option<(BTreeMap<String, u64>, Vec<String>)> {
        let selection = self.selection.as_ref()?;
        let route = self.config.routes.get(selection.route)?;
        let input = CostInput {
            model: &selection.request_model,
            backend: &selection.backend.spec.name,
            service_backend: &selection.backend.spec.service_backend,
            route: &route.name,
            usage,
        };
        Some(costs::compute(&self.config, route, &input))
    }

    fn finish(&mut self) -> Option<Struct> {
        if self.response.finished {
            return None;
        }
        self.response.finished = true;
        let selection = self.selection.as_ref()?;
        let config = self.config.clone();
        let route = config.routes.get(selection.route)?;
        let ok = (200..300).contains(&self.response.status);
        let (usage, response_model) = if let Some(translator) = &self.response.translator {
            (translator.usage(), translator.model())
        } else if self.response.streaming {
            (
                self.response.stream.usage,
                self.response.stream.model.clone(),
            )
        } else if let Some((usage, model)) = &self.response.translated {
            (*usage, model.clone())
        } else {
            (TokenUsage::default(), None)
        };
        let response_model = response_model.unwrap_or_else(|| selection.request_model.clone());
        // Model names are bounded as label values (see `metrics`): a client picks them.
        let models = &self.metrics.models;
        let known = &config.known_models;
        let labels = GenAiLabels {
            gen_ai_operation_name: self
                .endpoint
                .map(Endpoint::operation)
                .unwrap_or("chat")
                .to_string(),
            gen_ai_provider_name: selection
                .backend
                .spec
                .schema
                .name
                .gen_ai_provider_name()
                .to_string(),
            gen_ai_original_model: models.label(known, &selection.original_model),
            gen_ai_request_model: models.label(known, &selection.request_model),
            gen_ai_response_model: models.label(known, &response_model),
        };
        self.record(&labels, &usage, ok);
        let mut fields = BTreeMap::new();
        fields.insert("response_model".to_string(), string_value(&response_model));
        if let Some((values, errors)) = ok.then(|| self.costs(usage)).flatten() {
            for error in errors {
                tracing::warn!(route = %route.name, "{error}");
            }
            for (key, value) in values {
                fields.insert(key, number_value(value as f64));
            }
        }
        if let (true, Some(first)) = (self.response.streaming, self.response.first_chunk) {
            let ttft = first.duration_since(self.started);
            fields.insert(
                "token_latency_ttft".to_string(),
                number_value(ttft.as_secs_f64() * 1000.0),
            );
            let events = self.response.stream.events;
            if events > 1 {
                let itl = first.elapsed().as_secs_f64() / (events - 1) as f64;
                fields.insert("token_latency_itl".to_string(), number_value(itl * 1000.0));
            }
        }
        Some(metadata_struct(fields))
    }

    fn record(&self, labels: &GenAiLabels, usage: &TokenUsage, ok: bool) {
        let m = &self.metrics;
        for (kind, value) in [
            ("input", usage.input),
            ("cached_input", usage.cached_input),
            ("cache_creation_input", usage.cache_creation_input),
            ("output", usage.output),
            ("reasoning", usage.reasoning),
        ] {
            if let Some(value) = value {
                m.token_usage
                    .get_or_create(&TokenLabels {
                        gen_ai: labels.clone(),
                        gen_ai_token_type: kind,
                    })
                    .observe(value as f64);
            }
        }
        m.request_duration
            .get_or_create(&DurationLabels {
                gen_ai: labels.clone(),
                error_type: if ok { "" } else { "_OTHER" },
            })
            .observe(self.started.elapsed().as_secs_f64());
        if let (true, Some(first)) = (self.response.streaming, self.response.first_chunk) {
            m.time_to_first_token
                .get_or_create(labels)
                .observe(first.duration_since(self.started).as_secs_f64());
            let outputs = usage.output.unwrap_or(self.response.stream.events);
            if outputs > 1 {
                let per_token = first.elapsed().as_secs_f64() / (outputs - 1) as f64;
                m.time_per_output_token
                    .get_or_create(labels)
                    .observe(per_token);
            }
        }
    }

    /// Called when the stream ends without a complete response (client gone, upstream reset):
    /// records the failure once.
    pub fn abandon(&mut self) {
        if let Some(pending) = self.pending.take() {
            self.resolve_attempt(pending);
        }
        if self.selection.is_some() && !self.response.finished {
            if self.response.status == 0 {
                self.response.status = 499;
            }
            let _ = self.finish();
        }
    }
}

/// The upstream path of an OpenAI-shaped request: `/<prefix>/<endpoint>` for OpenAI-compatible
/// servers, the deployment path with `api-version` for Azure OpenAI.
fn upstream_path(
    schema: &aigw_filterconfig::BackendSchema,
    endpoint: Endpoint,
    model: &str,
) -> String {
    match schema.name {
        ApiSchema::AzureOpenAI => {
            let version = schema.version.as_deref().unwrap_or_default();
            match endpoint {
                Endpoint::Responses | Endpoint::ResponsesInputTokens => {
                    format!("/openai/{}?api-version={version}", endpoint.suffix())
                }
                _ => format!(
                    "/openai/deployments/{}/{}?api-version={version}",
                    crate::translate::path_escape(model),
                    endpoint.suffix()
                ),
            }
        }
        // vLLM serves its tokenizer at the root, whatever the API prefix.
        _ if endpoint == Endpoint::Tokenize => "/tokenize".to_string(),
        _ => {
            let prefix = schema.api_prefix();
            if prefix.is_empty() {
                format!("/{}", endpoint.suffix())
            } else {
                format!("/{prefix}/{}", endpoint.suffix())
            }
        }
    }
}

/// Longest provider error text (in bytes) passed on to a client inside an error body.
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// `text` cut at [`MAX_ERROR_MESSAGE_BYTES`] (on a character boundary), marked when cut.
fn truncate_message(text: &str) -> String {
    if text.len() <= MAX_ERROR_MESSAGE_BYTES {
        return text.to_string();
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// `bytes` with every credential value in `secrets` replaced by `<redacted>` ([`redact`]).
fn scrub(bytes: &[u8], secrets: &[Secret]) -> Option<Vec<u8>> {
    redact(bytes, secrets.iter().map(|s| s.expose().as_bytes()))
}

fn auth_error_code(err: &AuthError) -> &'static str {
    match err {
        AuthError::Unavailable(_) => "credential_unavailable",
        AuthError::Missing => "missing_credential",
        AuthError::Invalid(_) => "invalid_credential",
    }
}

/// Headers that carry a client's credentials; removed when the extproc adds the backend's own.
const CLIENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// Headers the configured mutations may not touch: pseudo-headers and the gateway's own.
fn protected(name: &str) -> bool {
    name.starts_with(':') || name.starts_with("x-ai-eg-") || name == "x-envoy-original-path"
}

fn body_response(common: CommonResponse, request: bool) -> ProcessingResponse {
    let body = BodyResponse {
        response: Some(common),
    };
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestBody(body)
        } else {
            processing_response::Response::ResponseBody(body)
        }),
        ..Default::default()
    }
}

fn response_body_response(common: CommonResponse) -> ProcessingResponse {
    body_response(common, false)
}

#[cfg(test)]
mod tests;
