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
//!
//! By job: `request` (headers, body, route and backend, the request prepared for the backend),
//! `response` (headers and body, buffered or streamed, translated back), `accounting` (usage,
//! costs and metrics at the end), `reply` (the ext_proc responses and error shapes) and
//! `metadata` (dynamic metadata and the header bookkeeping between attempts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use aigw_filterconfig::ERROR_SHAPE_KEY;
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, HttpHeaders, ProcessingRequest, ProcessingResponse, TrailersResponse,
    processing_request, processing_response,
};
use envoy_types::pb::google::protobuf::value::Kind;
use serde_json::Value;

use crate::config::{Backend, RuntimeConfig, Secret};
use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use crate::translate::{StreamTranslator, TranslateError, Translator, multipart};
use crate::usage::{StreamUsage, TokenUsage};

use self::metadata::{set_metadata, string_value};
use self::reply::error_response;

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

/// The headers of an ext_proc message, names lower-cased.
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
}

mod accounting;
mod metadata;
mod reply;
mod request;
mod response;

#[cfg(test)]
mod tests;
