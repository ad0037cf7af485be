//! Builders of what Envoy and the providers send, for the crate's tests and benchmarks: the
//! ext_proc messages of one stream and AWS event-stream frames.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, ProcessingRequest, processing_request::Request,
};

use crate::translate::eventstream;

/// The request headers Envoy sends: `pairs` (pseudo-headers such as `:path` among them);
/// `end_of_stream` where the request has no body.
pub fn request_headers(pairs: &[(&str, &str)], end_of_stream: bool) -> ProcessingRequest {
    message(Request::RequestHeaders(http_headers(pairs, end_of_stream)))
}

/// The response headers Envoy sends: `pairs` (`:status` among them); `end_of_stream` where the
/// response has no body.
pub fn response_headers(pairs: &[(&str, &str)], end_of_stream: bool) -> ProcessingRequest {
    message(Request::ResponseHeaders(http_headers(pairs, end_of_stream)))
}

/// The whole request body.
pub fn request_body(bytes: &[u8]) -> ProcessingRequest {
    message(Request::RequestBody(http_body(bytes, true)))
}

/// A piece of the response body (the last one where `end_of_stream`).
pub fn response_body(bytes: &[u8], end_of_stream: bool) -> ProcessingRequest {
    message(Request::ResponseBody(http_body(bytes, end_of_stream)))
}

/// An AWS event-stream frame carrying the JSON `payload` of event `event`, as Bedrock streams.
pub fn event_frame(event: &str, payload: &[u8]) -> Vec<u8> {
    eventstream::encode(
        &[
            (":event-type", event),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

fn message(request: Request) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(request),
        ..Default::default()
    }
}

fn http_headers(pairs: &[(&str, &str)], end_of_stream: bool) -> HttpHeaders {
    let headers = pairs
        .iter()
        .map(|(key, value)| HeaderValue {
            key: key.to_string(),
            value: String::new(),
            raw_value: value.as_bytes().to_vec(),
        })
        .collect();
    HttpHeaders {
        headers: Some(HeaderMap { headers }),
        end_of_stream,
        ..Default::default()
    }
}

fn http_body(bytes: &[u8], end_of_stream: bool) -> HttpBody {
    HttpBody {
        body: bytes.to_vec(),
        end_of_stream,
        ..Default::default()
    }
}
