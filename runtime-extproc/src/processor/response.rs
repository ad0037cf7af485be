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
