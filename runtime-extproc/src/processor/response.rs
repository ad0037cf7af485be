//! The response side: headers, then the body (buffered, or streamed chunk by chunk), translated
//! back to the client's API with provider failures answered in the client's shape.

use std::time::Instant;

use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    ProcessingMode, processing_mode::BodySendMode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, CommonResponse, HeaderMutation, HeadersResponse, HttpBody, HttpHeaders,
    ProcessingResponse, body_mutation, processing_response,
};
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::redact::scrub;
use crate::translate::ResponseContext;
use crate::usage::{self};

use super::metadata::{attempt_metadata, merge_metadata};
use super::reply::{error_body, header_value, response_body_response, truncate_message};
use super::{Processor, read_headers};

impl Processor {
    pub(super) fn on_response_headers(&mut self, message: &HttpHeaders) -> ProcessingResponse {
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

    pub(super) fn on_response_body(&mut self, body: HttpBody) -> ProcessingResponse {
        if self.answered || self.selection.is_none() || self.response.finished {
            return response_body_response(CommonResponse::default());
        }
        if self.response.first_chunk.is_none() && !body.body.is_empty() {
            self.response.first_chunk = Some(Instant::now());
        }
        if self.response.streaming {
            return self.stream_chunk(body);
        }
        self.response.body.extend_from_slice(&body.body);
        if !body.end_of_stream {
            return response_body_response(CommonResponse::default());
        }
        self.whole_response()
    }

    /// One chunk of a streamed response: translated (each complete provider event becomes
    /// chunks of the client's API at once; a partial one waits) or passed with its usage read,
    /// and scrubbed of the credentials sent.
    fn stream_chunk(&mut self, body: HttpBody) -> ProcessingResponse {
        let mut common = CommonResponse::default();
        let secrets = self
            .selection
            .as_ref()
            .map(|s| s.sent_secrets.as_slice())
            .unwrap_or_default();
        if let Some(translator) = self.response.translator.as_mut() {
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
            let out = scrub(&out, secrets).unwrap_or(out);
            common.body_mutation = Some(replace_body(out));
        } else {
            self.response.stream.feed(&body.body);
            // A credential echoed inside an event (an error event) never reaches the
            // client; the chunk passes untouched otherwise.
            if let Some(clean) = scrub(&body.body, secrets) {
                common.body_mutation = Some(replace_body(clean));
            }
        }
        let mut response = response_body_response(common);
        response.dynamic_metadata = if body.end_of_stream {
            self.finish()
        } else {
            self.interim_costs()
        };
        response
    }

    /// The whole of a buffered response: translated back, checked, or (an error) kept or put
    /// in the client's shape; then costs and metrics.
    fn whole_response(&mut self) -> ProcessingResponse {
        let status = self.response.status;
        let success = (200..300).contains(&status);
        if success && self.response.body.is_empty() {
            return self.bad_upstream(&format!(
                "the provider answered {status} with an empty body"
            ));
        }
        // A provider that echoes the credential in an error never gets it to the client.
        let redacted = status >= 400 && self.redact_credentials();
        let translating = self
            .selection
            .as_ref()
            .is_some_and(|s| s.translator.is_some());
        let replaced = if translating {
            match self.translate_whole(success) {
                Ok(bytes) => Some((bytes, true)),
                Err(response) => return *response,
            }
        } else if success {
            if let Err(response) = self.check_passthrough() {
                return *response;
            }
            None
        } else if status >= 400 {
            self.provider_error(redacted)
        } else {
            None
        };
        let mut common = CommonResponse::default();
        if let Some((bytes, json)) = replaced {
            let mut set_headers = Vec::new();
            if json {
                set_headers.push(header_value("content-type", "application/json"));
            }
            set_headers.push(header_value("content-length", &bytes.len().to_string()));
            common.header_mutation = Some(HeaderMutation {
                set_headers,
                remove_headers: vec!["content-encoding".into()],
            });
            common.body_mutation = Some(replace_body(bytes));
        }
        let mut response = response_body_response(common);
        response.dynamic_metadata = self.finish();
        response
    }

    /// A buffered answer in the backend's API, translated to the client's: the answer (with
    /// its usage and model read) or the provider's error in the client's shape.
    fn translate_whole(&mut self, success: bool) -> Result<Vec<u8>, Box<ProcessingResponse>> {
        let Some(translator) = self.selection.as_ref().and_then(|s| s.translator.as_ref()) else {
            return Ok(self.response.body.clone());
        };
        let request_model = self
            .selection
            .as_ref()
            .map(|s| s.request_model.as_str())
            .unwrap_or_default();
        let ctx = ResponseContext {
            model: request_model,
            headers: &self.response.headers,
        };
        if !success {
            return Ok(translator.error(self.response.status, &self.response.body, &ctx));
        }
        match translator.response(&self.response.body, &ctx) {
            Ok(translated) => {
                self.response.translated = Some((translated.usage, translated.model));
                Ok(translated.body)
            }
            Err(err) => Err(Box::new(self.bad_upstream(&format!(
                "the provider's answer could not be translated: {err}"
            )))),
        }
    }

    /// A success passed through as it is: an endpoint that answers JSON must get a JSON
    /// object, whose usage is read.
    fn check_passthrough(&mut self) -> Result<(), Box<ProcessingResponse>> {
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        if !endpoint.answers_json() {
            return Ok(());
        }
        match serde_json::from_slice::<Value>(&self.response.body) {
            Ok(value) if value.is_object() => {
                self.response.translated = Some(usage::from_value(&value));
                Ok(())
            }
            _ => {
                let status = self.response.status;
                Err(Box::new(self.bad_upstream(&format!(
                    "the provider answered {status} with a body that is not a JSON object"
                ))))
            }
        }
    }

    /// A provider's error in the client's own API: a JSON error is kept as it is (its bytes
    /// replaced only when a credential was redacted from it); anything else is wrapped in the
    /// client's error shape. The new body, and whether it needs a JSON content type.
    fn provider_error(&self, redacted: bool) -> Option<(Vec<u8>, bool)> {
        let status = self.response.status;
        let is_json =
            serde_json::from_slice::<Value>(&self.response.body).is_ok_and(|v| v.is_object());
        if is_json {
            return redacted.then(|| (self.response.body.clone(), false));
        }
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
        Some((bytes, true))
    }

    /// Replaces every credential value this request sent upstream, should the provider's
    /// answer echo it, with `<redacted>`; true when something was replaced.
    pub(super) fn redact_credentials(&mut self) -> bool {
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

/// A body mutation that replaces the whole body with `bytes`.
fn replace_body(bytes: Vec<u8>) -> BodyMutation {
    BodyMutation {
        mutation: Some(body_mutation::Mutation::Body(bytes)),
    }
}
