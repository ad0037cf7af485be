//! What the processor answers Envoy: header and body responses, and errors in the client's
//! API shape (OpenAI's, or Anthropic's on the Messages API).

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse, processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use serde_json::json;

use crate::auth::AuthError;

pub(super) fn header_value(name: &str, value: &str) -> HeaderValueOption {
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

pub(super) fn immediate(status: u16, body: Vec<u8>, details: &str) -> ProcessingResponse {
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
pub(super) fn error_body(status: u16, message: &str, code: &str, anthropic: bool) -> Vec<u8> {
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
pub(super) fn error_response(
    status: u16,
    message: &str,
    code: &str,
    anthropic: bool,
) -> ProcessingResponse {
    immediate(status, error_body(status, message, code, anthropic), code)
}

pub(super) fn headers_response(common: CommonResponse) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(processing_response::Response::RequestHeaders(
            HeadersResponse {
                response: Some(common),
            },
        )),
        ..Default::default()
    }
}

/// Longest provider error text (in bytes) passed on to a client inside an error body.
pub(super) const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// `text` cut at [`MAX_ERROR_MESSAGE_BYTES`] (on a character boundary), marked when cut.
pub(super) fn truncate_message(text: &str) -> String {
    if text.len() <= MAX_ERROR_MESSAGE_BYTES {
        return text.to_string();
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

pub(super) fn auth_error_code(err: &AuthError) -> &'static str {
    match err {
        AuthError::Unavailable(_) => "credential_unavailable",
        AuthError::Missing => "missing_credential",
        AuthError::Invalid(_) => "invalid_credential",
    }
}

pub(super) fn body_response(common: CommonResponse, request: bool) -> ProcessingResponse {
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

pub(super) fn response_body_response(common: CommonResponse) -> ProcessingResponse {
    body_response(common, false)
}
