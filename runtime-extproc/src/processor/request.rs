//! The request side: headers, then the body read once it is whole, the route, rule and
//! backend picked, and the request prepared for that backend (translated, mutated, signed).

use std::sync::Arc;

use aigw_filterconfig::{
    ATTEMPT_METADATA_NAMESPACE, ATTEMPT_ORIGINALS_KEY, ApiSchema, CLIENT_AUTHORITY_HEADER,
    ERROR_SHAPE_KEY, MODEL_HEADER, SELECTED_BACKEND_HEADER, SELECTED_RULE_HEADER,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, CommonResponse, HeaderMutation, HttpBody, HttpHeaders, ProcessingResponse,
    body_mutation,
};
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use serde_json::{Value, json};

use crate::auth::{AuthError, BackendCredential, UpstreamCall};
use crate::config::{Backend, Secret};
use crate::endpoint::Endpoint;
use crate::router;
use crate::time::format_rfc3339;
use crate::translate::{RequestContext, Translator, multipart};
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;

use super::metadata::{
    attempt_metadata, attempt_originals, restore_forwarded_host, restore_headers, set_metadata,
    string_value, undo_earlier_attempts,
};
use super::reply::{
    auth_error_code, body_response, header_value, headers_response, immediate, truncate_message,
};
use super::{Parsed, Pending, Prepared, Processor, Role, Selection, read_headers};

impl Processor {
    pub(super) fn on_request_headers(&mut self, headers: &HttpHeaders) -> ProcessingResponse {
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

    pub(super) fn models(&self, endpoint: Endpoint) -> ProcessingResponse {
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

    pub(super) fn on_request_body(&mut self, body: HttpBody) -> ProcessingResponse {
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
    pub(super) fn read_json(&self) -> Result<(Value, String), Box<ProcessingResponse>> {
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
    pub(super) fn read_form(
        &self,
    ) -> Result<(Vec<multipart::Part>, String, bool), Box<ProcessingResponse>> {
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
    pub(super) fn parse(&self) -> Result<Parsed, Box<ProcessingResponse>> {
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
    pub(super) fn select_rule(
        &self,
        parsed: &Parsed,
    ) -> Result<(usize, usize), Box<ProcessingResponse>> {
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
    pub(super) fn route_request(&mut self) -> Result<ProcessingResponse, Box<ProcessingResponse>> {
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
    pub(super) fn client_credentials_for(&self, rule: &crate::config::Rule) -> Vec<String> {
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

    pub(super) fn no_backend(&self, model: &str) -> ProcessingResponse {
        self.client_error(
            503,
            &format!("no backend with a positive weight serves model {model:?}"),
            "no_backend",
        )
    }

    /// One attempt, in the extproc of a rule cluster: the request translated, overridden,
    /// mutated and signed for the backend of the locality Envoy chose for this attempt.
    pub(super) fn attempt_request(
        &mut self,
    ) -> Result<ProcessingResponse, Box<ProcessingResponse>> {
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
    pub(super) fn resolve_attempt(&mut self, pending: Pending) {
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
    pub(super) fn prepare(
        &self,
        parsed: Parsed,
        route_index: usize,
        backend: &Arc<Backend>,
    ) -> Result<Prepared, Box<ProcessingResponse>> {
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        let spec = &backend.spec;
        let request_model = spec
            .model_name_override
            .clone()
            .unwrap_or_else(|| parsed.model.clone());
        let mut translator = crate::translate::select(&spec.schema, endpoint)
            .map_err(|err| Box::new(self.translate_error(&err)))?;
        let model = parsed.model.clone();
        let stream = parsed.stream;
        let upstream = self.upstream_request(parsed, spec, &request_model, &mut translator)?;
        let mut upstream_path = upstream.path;
        let (mut set, mut remove) = self.header_changes(&model, &upstream.headers, spec);
        let sent_secrets = match &backend.auth {
            Some(credential) => self.add_credentials(
                credential,
                spec,
                &mut upstream_path,
                upstream.body.as_deref().unwrap_or(&self.body),
                (&mut set, &mut remove),
            )?,
            None => Vec::new(),
        };
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
        let body_mutation = upstream.body.map(|bytes| {
            set.push(header_value("content-length", &bytes.len().to_string()));
            BodyMutation {
                mutation: Some(body_mutation::Mutation::Body(bytes)),
            }
        });
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

    /// The body, path and extra headers the backend receives: the model overridden, usage asked
    /// for, the request translated to the backend's API and the configured body mutations
    /// applied to what is sent (as upstream does). `body` is `None` when the client's bytes
    /// pass unchanged.
    fn upstream_request(
        &self,
        parsed: Parsed,
        spec: &aigw_filterconfig::Backend,
        request_model: &str,
        translator: &mut Option<Box<dyn Translator>>,
    ) -> Result<UpstreamRequest, Box<ProcessingResponse>> {
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        let Parsed {
            form,
            mut request,
            model,
            stream,
        } = parsed;
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
                    multipart::replace_field(&self.body, parts, "model", request_model);
            }
        } else if request_model != model {
            request["model"] = Value::String(request_model.to_string());
            changed = true;
        }
        // Costs need usage, which OpenAI streams only report when asked.
        if stream
            && endpoint == Endpoint::ChatCompletions
            && self.config.has_costs
            && translator.is_none()
        {
            changed |= ask_for_usage(&mut request);
        }
        let mut headers = Vec::new();
        let path = match translator {
            None => upstream_path(&spec.schema, endpoint, request_model),
            Some(translator) => {
                let ctx = RequestContext {
                    model: request_model,
                    stream,
                    headers: &self.headers,
                };
                let upstream = translator
                    .request(&request, &ctx)
                    .map_err(|err| Box::new(self.translate_error(&err)))?;
                headers = upstream.headers;
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
        {
            changed |= mutate_body(mutation, &mut request);
        }
        let body = match translated_body {
            Some(bytes) => Some(bytes),
            None if changed => {
                Some(serde_json::to_vec(&request).unwrap_or_else(|_| self.body.clone()))
            }
            None => None,
        };
        Ok(UpstreamRequest {
            body,
            path,
            headers,
        })
    }

    /// The headers an attempt sets and removes before credentials: the model header, the
    /// translator's headers and the backend's configured header mutations.
    fn header_changes(
        &self,
        model: &str,
        extra_headers: &[(String, String)],
        spec: &aigw_filterconfig::Backend,
    ) -> (Vec<HeaderValueOption>, Vec<String>) {
        let mut set = vec![header_value(MODEL_HEADER, model)];
        for (name, value) in extra_headers {
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
        (set, remove)
    }

    /// Signs the request with the backend's credential: its headers set, the client's own
    /// credentials removed, the path replaced when the credential says so. Returns the
    /// credential values sent, to scrub them from the provider's answer.
    fn add_credentials(
        &self,
        credential: &BackendCredential,
        spec: &aigw_filterconfig::Backend,
        upstream_path: &mut String,
        body: &[u8],
        (set, remove): (&mut Vec<HeaderValueOption>, &mut Vec<String>),
    ) -> Result<Vec<Secret>, Box<ProcessingResponse>> {
        // The Host the provider receives: the Backend's hostname when Envoy rewrites to it,
        // else the client's authority, which Envoy forwards unchanged.
        let host = spec.upstream_host.as_deref().unwrap_or(&self.authority);
        let call = UpstreamCall {
            method: "POST",
            host,
            path: upstream_path,
            body,
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
            *upstream_path = path;
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
        let mut sent_secrets = Vec::new();
        for (name, value) in &applied.headers {
            set.push(header_value(name, value));
            if !name.starts_with("x-amz-date") {
                let value = value.strip_prefix("Bearer ").unwrap_or(value);
                sent_secrets.push(Secret::new(value));
            }
        }
        Ok(sent_secrets)
    }
}

/// What one attempt sends upstream in place of the client's body and path.
struct UpstreamRequest {
    /// The new body; `None`: the client's bytes pass as they are.
    body: Option<Vec<u8>>,
    path: String,
    /// Headers the translator adds (e.g. Anthropic's version).
    headers: Vec<(String, String)>,
}

/// Asks an OpenAI chat stream to report usage (`stream_options.include_usage`); true when the
/// request changed.
fn ask_for_usage(request: &mut Value) -> bool {
    let include = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool);
    if include == Some(true) {
        return false;
    }
    if !request.get("stream_options").is_some_and(Value::is_object) {
        request["stream_options"] = json!({});
    }
    request["stream_options"]["include_usage"] = Value::Bool(true);
    true
}

/// Applies a backend's body mutation to a JSON request; true when the request changed.
fn mutate_body(mutation: &aigw_filterconfig::BodyMutation, request: &mut Value) -> bool {
    let Some(object) = request.as_object_mut() else {
        return false;
    };
    let mut changed = false;
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
    changed
}

/// Longest `model` a request may carry: it travels in a header (`x-ai-eg-model`) and in paths.
pub const MAX_MODEL_BYTES: usize = 256;

/// Checks a client's `model` before it becomes a header value: bounded in length, and without
/// control characters (which no header value may hold).
pub(super) fn check_model(model: &str) -> Result<(), String> {
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

/// The upstream path of an OpenAI-shaped request: `/<prefix>/<endpoint>` for OpenAI-compatible
/// servers, the deployment path with `api-version` for Azure OpenAI.
pub(super) fn upstream_path(
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

/// Headers that carry a client's credentials; removed when the extproc adds the backend's own.
pub(super) const CLIENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// Headers the configured mutations may not touch: pseudo-headers and the gateway's own.
pub(super) fn protected(name: &str) -> bool {
    name.starts_with(':') || name.starts_with("x-ai-eg-") || name == "x-envoy-original-path"
}
