//! The AWS binary event stream (`application/vnd.amazon.eventstream`): an incremental frame
//! decoder that checks both CRCs and bounds frame sizes, and an encoder for string headers.
//!
//! A frame is: total length (4 bytes, big-endian), headers length (4), CRC32 of those eight
//! bytes (4), headers, payload, CRC32 of everything before it (4). A header is a one-byte name
//! length, the name, a one-byte value type and the value.

use super::{TranslateError, translate_each};

/// Frames larger than this are refused.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Prelude (12 bytes) plus the trailing message CRC (4 bytes).
const OVERHEAD: usize = 16;

/// A decoded header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 and 1.
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Vec<u8>),
    /// Type 7.
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

/// One complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Headers in wire order.
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload (JSON for Bedrock).
    pub payload: Vec<u8>,
}

impl Message {
    /// The string value of a header, if present and a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|(n, v)| match v {
            HeaderValue::String(s) if n == name => Some(s.as_str()),
            _ => None,
        })
    }

    /// `:event-type`.
    pub fn event_type(&self) -> Option<&str> {
        self.header(":event-type")
    }

    /// `:message-type` (`event`, `exception` or `error`).
    pub fn message_type(&self) -> Option<&str> {
        self.header(":message-type")
    }

    /// `:exception-type`.
    pub fn exception_type(&self) -> Option<&str> {
        self.header(":exception-type")
    }

    /// What an `exception` or `error` frame reports, `None` for an event: the exception type
    /// (`:exception-type`, else `:error-code`) and the message (the payload's `message` or
    /// `Message`, else `:error-message`, else the payload's text).
    pub fn failure(&self) -> Option<Failure<'_>> {
        if !matches!(self.message_type(), Some("exception" | "error")) {
            return None;
        }
        let kind = self.exception_type().or_else(|| self.header(":error-code"));
        let message = serde_json::from_slice::<serde_json::Value>(&self.payload)
            .ok()
            .and_then(|p| {
                p.get("message")
                    .or_else(|| p.get("Message"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            })
            .or_else(|| self.header(":error-message").map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.payload).into_owned());
        Some(Failure { kind, message })
    }
}

/// An `exception` or `error` frame ([`Message::failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<'a> {
    /// The exception type, such as `throttlingException`.
    pub kind: Option<&'a str>,
    /// What the exception says.
    pub message: String,
}

impl Failure<'_> {
    /// The HTTP status AWS documents for the exception (500 for an unknown or missing type).
    pub fn status(&self) -> u16 {
        exception_status(self.kind.unwrap_or(""))
    }
}

/// The HTTP status AWS documents for a Bedrock stream exception type, in any letter case;
/// 500 for a type it does not list.
pub fn exception_status(kind: &str) -> u16 {
    match kind.to_ascii_lowercase().as_str() {
        "validationexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "modeltimeoutexception" => 408,
        "modelstreamerrorexception" => 424,
        "throttlingexception" | "servicequotaexceededexception" => 429,
        "serviceunavailableexception" | "modelnotreadyexception" => 503,
        _ => 500,
    }
}

/// Incremental decoder: keeps only the bytes of the unfinished frame between chunks.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, TranslateError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| TranslateError::Upstream("truncated event stream frame".into()))
}

fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Result<&'a [u8], TranslateError> {
    let slice = bytes
        .get(*at..at.saturating_add(len))
        .ok_or_else(|| TranslateError::Upstream("truncated event stream header".into()))?;
    *at += len;
    Ok(slice)
}

fn fixed<const N: usize>(bytes: &[u8], at: &mut usize) -> Result<[u8; N], TranslateError> {
    let slice = take(bytes, at, N)?;
    <[u8; N]>::try_from(slice)
        .map_err(|_| TranslateError::Upstream("truncated event stream header".into()))
}

fn parse_headers(bytes: &[u8]) -> Result<Vec<(String, HeaderValue)>, TranslateError> {
    let mut headers = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let [name_len] = fixed::<1>(bytes, &mut at)?;
        let name = take(bytes, &mut at, usize::from(name_len))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| {
            TranslateError::Upstream("event stream header name is not UTF-8".into())
        })?;
        let [kind] = fixed::<1>(bytes, &mut at)?;
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(i8::from_be_bytes(fixed(bytes, &mut at)?)),
            3 => HeaderValue::Short(i16::from_be_bytes(fixed(bytes, &mut at)?)),
            4 => HeaderValue::Int(i32::from_be_bytes(fixed(bytes, &mut at)?)),
            5 => HeaderValue::Long(i64::from_be_bytes(fixed(bytes, &mut at)?)),
            6 | 7 => {
                let len = u16::from_be_bytes(fixed(bytes, &mut at)?);
                let raw = take(bytes, &mut at, usize::from(len))?.to_vec();
                if kind == 6 {
                    HeaderValue::Bytes(raw)
                } else {
                    HeaderValue::String(String::from_utf8(raw).map_err(|_| {
                        TranslateError::Upstream("event stream header value is not UTF-8".into())
                    })?)
                }
            }
            8 => HeaderValue::Timestamp(i64::from_be_bytes(fixed(bytes, &mut at)?)),
            9 => HeaderValue::Uuid(fixed(bytes, &mut at)?),
            other => {
                return Err(TranslateError::Upstream(format!(
                    "unknown event stream header type {other}"
                )));
            }
        };
        headers.push((name, value));
    }
    Ok(headers)
}

/// A stream translator over AWS event-stream frames: the framing is read here, once; the
/// provider's module maps each complete message ([`FrameEvents::on_message`]).
pub(crate) trait FrameEvents {
    /// The stream's decoder.
    fn decoder(&mut self) -> &mut Decoder;

    /// Maps one complete message to client events, appended to `out`.
    fn on_message(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), TranslateError>;

    /// The client events for `chunk`: every message it completes, mapped in order.
    fn feed_frames(&mut self, chunk: &[u8]) -> Result<Vec<u8>, TranslateError> {
        let messages = self.decoder().feed(chunk)?;
        translate_each(messages, |message, out| self.on_message(message, out))
    }
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether part of a frame is waiting for more bytes.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The end of the stream: an error when it ended inside a frame, which every translator
    /// of an event stream reports the same way.
    pub fn finish(&self) -> Result<(), TranslateError> {
        if self.has_pending() {
            return Err(TranslateError::Upstream(
                "the AWS event stream ended inside a frame".into(),
            ));
        }
        Ok(())
    }

    /// Consumes a chunk; returns every frame it completes, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Message>, TranslateError> {
        self.pending.extend_from_slice(chunk);
        let mut messages = Vec::new();
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            if rest.len() < 12 {
                break;
            }
            let total = be_u32(rest, 0)? as usize;
            let headers_len = be_u32(rest, 4)? as usize;
            let prelude_crc = be_u32(rest, 8)?;
            if crc32fast::hash(&rest[..8]) != prelude_crc {
                self.pending.clear();
                return Err(TranslateError::Upstream(
                    "event stream prelude CRC mismatch".into(),
                ));
            }
            if total > MAX_FRAME {
                self.pending.clear();
                return Err(TranslateError::Upstream(format!(
                    "event stream frame of {total} bytes exceeds the {MAX_FRAME} byte limit"
                )));
            }
            if total < OVERHEAD || headers_len > total - OVERHEAD {
                self.pending.clear();
                return Err(TranslateError::Upstream(
                    "event stream frame lengths are inconsistent".into(),
                ));
            }
            if rest.len() < total {
                break;
            }
            let frame = &rest[..total];
            let message_crc = be_u32(frame, total - 4)?;
            if crc32fast::hash(&frame[..total - 4]) != message_crc {
                self.pending.clear();
                return Err(TranslateError::Upstream(
                    "event stream message CRC mismatch".into(),
                ));
            }
            let headers = match parse_headers(&frame[12..12 + headers_len]) {
                Ok(headers) => headers,
                Err(err) => {
                    self.pending.clear();
                    return Err(err);
                }
            };
            messages.push(Message {
                headers,
                payload: frame[12 + headers_len..total - 4].to_vec(),
            });
            start += total;
        }
        self.pending.drain(..start);
        Ok(messages)
    }
}

/// Encodes one frame with string headers.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(usize::from(u8::MAX))];
        let value = &value.as_bytes()[..value.len().min(usize::from(u16::MAX))];
        header_bytes.push(name.len() as u8);
        header_bytes.extend_from_slice(name);
        header_bytes.push(7);
        header_bytes.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header_bytes.extend_from_slice(value);
    }
    let total = OVERHEAD + header_bytes.len() + payload.len();
    let mut frame = Vec::with_capacity(total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(&(header_bytes.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&prelude_crc.to_be_bytes());
    frame.extend_from_slice(&header_bytes);
    frame.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&message_crc.to_be_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn known_frame_from_the_spec_examples() {
        // A frame with no headers and payload {"foo": "bar"}, as documented by AWS SDK examples.
        let frame = encode(&[], br#"{"foo": "bar"}"#);
        assert_eq!(&frame[..12], &[0, 0, 0, 30, 0, 0, 0, 0, 186, 242, 246, 138]);
        assert_eq!(&frame[26..], &[174, 114, 88, 228]);
        let frame = encode(
            &[("content-type", "application/json")],
            br#"{"foo": "bar"}"#,
        );
        assert_eq!(&frame[..12], &[0, 0, 0, 62, 0, 0, 0, 32, 64, 93, 249, 70]);
        assert_eq!(&frame[58..], &[111, 162, 191, 59]);
    }

    #[test]
    fn round_trip_split_anywhere() {
        let mut stream = event("messageStart", r#"{"role":"assistant"}"#);
        stream.extend(event(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        stream.extend(encode(&[], b""));
        for split in 1..=stream.len() {
            let mut decoder = Decoder::new();
            let mut messages = Vec::new();
            for chunk in stream.chunks(split) {
                messages.extend(decoder.feed(chunk).unwrap());
            }
            assert_eq!(messages.len(), 3, "split {split}");
            assert_eq!(messages[0].event_type(), Some("messageStart"));
            assert_eq!(messages[0].message_type(), Some("event"));
            assert_eq!(
                messages[1].payload,
                br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#
            );
            assert!(messages[2].headers.is_empty() && messages[2].payload.is_empty());
            assert!(!decoder.has_pending());
        }
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_an_upstream_error() {
        let mut decoder = Decoder::new();
        assert!(decoder.finish().is_ok());
        decoder.feed(&[0, 0, 0]).expect("a partial prelude waits");
        assert!(matches!(
            decoder.finish(),
            Err(TranslateError::Upstream(message)) if message.contains("inside a frame")
        ));
    }

    #[test]
    fn other_header_types_are_skipped_by_size() {
        let mut headers = Vec::new();
        headers.extend_from_slice(b"\x01a\x00"); // bool true
        headers.extend_from_slice(b"\x01b\x01"); // bool false
        headers.extend_from_slice(b"\x01c\x02\xff"); // byte
        headers.extend_from_slice(b"\x01d\x03\x00\x02"); // short
        headers.extend_from_slice(b"\x01e\x04\x00\x00\x00\x03"); // int
        headers.extend_from_slice(b"\x01f\x05\x00\x00\x00\x00\x00\x00\x00\x04"); // long
        headers.extend_from_slice(b"\x01g\x06\x00\x02\xde\xad"); // bytes
        headers.extend_from_slice(b"\x01h\x08\x00\x00\x01\x00\x00\x00\x00\x05"); // timestamp
        headers.push(1);
        headers.extend_from_slice(b"i\x09");
        headers.extend_from_slice(&[7; 16]); // uuid
        headers.extend_from_slice(b"\x0f:exception-type\x07\x00\x13throttlingException");
        let payload = br#"{"message":"slow down"}"#;
        let total = 16 + headers.len() + payload.len();
        let mut frame = Vec::new();
        frame.extend_from_slice(&(total as u32).to_be_bytes());
        frame.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame.extend_from_slice(&headers);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        let messages = Decoder::new().feed(&frame).unwrap();
        let message = &messages[0];
        assert_eq!(message.headers.len(), 10);
        assert_eq!(message.headers[0].1, HeaderValue::Bool(true));
        assert_eq!(message.headers[2].1, HeaderValue::Byte(-1));
        assert_eq!(message.headers[5].1, HeaderValue::Long(4));
        assert_eq!(message.headers[6].1, HeaderValue::Bytes(vec![0xde, 0xad]));
        assert_eq!(message.headers[8].1, HeaderValue::Uuid([7; 16]));
        assert_eq!(message.exception_type(), Some("throttlingException"));
        assert_eq!(message.payload, payload);
    }

    #[test]
    fn exception_and_error_frames_report_their_failure() {
        let exception = encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "modelTimeoutException"),
            ],
            br#"{"Message":"too slow"}"#,
        );
        let message = &Decoder::new().feed(&exception).unwrap()[0];
        let failure = message.failure().expect("an exception");
        assert_eq!(failure.kind, Some("modelTimeoutException"));
        assert_eq!(failure.message, "too slow");
        assert_eq!(failure.status(), 408);

        let error = encode(
            &[
                (":message-type", "error"),
                (":error-code", "ThrottlingException"),
                (":error-message", "slow down"),
            ],
            b"",
        );
        let message = &Decoder::new().feed(&error).unwrap()[0];
        let failure = message.failure().expect("an error");
        assert_eq!(failure.kind, Some("ThrottlingException"));
        assert_eq!(failure.message, "slow down");
        assert_eq!(failure.status(), 429);

        let message = &Decoder::new().feed(&event("messageStop", "{}")).unwrap()[0];
        assert_eq!(message.failure(), None);
    }

    #[test]
    fn exception_types_map_to_the_statuses_aws_documents() {
        for (kind, status) in [
            ("validationException", 400),
            ("accessDeniedException", 403),
            ("resourceNotFoundException", 404),
            ("modelTimeoutException", 408),
            ("modelStreamErrorException", 424),
            ("throttlingException", 429),
            ("serviceQuotaExceededException", 429),
            ("serviceUnavailableException", 503),
            ("modelNotReadyException", 503),
            ("internalServerException", 500),
            ("", 500),
        ] {
            assert_eq!(exception_status(kind), status, "{kind}");
        }
    }

    #[test]
    fn corrupted_crcs_are_rejected() {
        let frame = event("messageStart", r#"{"role":"assistant"}"#);
        let mut prelude = frame.clone();
        prelude[9] ^= 1;
        assert!(matches!(
            Decoder::new().feed(&prelude),
            Err(TranslateError::Upstream(m)) if m.contains("prelude")
        ));
        let mut body = frame.clone();
        let last_payload_byte = body.len() - 5;
        body[last_payload_byte] ^= 0x20;
        assert!(matches!(
            Decoder::new().feed(&body),
            Err(TranslateError::Upstream(m)) if m.contains("message CRC")
        ));
        let mut tail = frame;
        let end = tail.len() - 1;
        tail[end] ^= 0xff;
        assert!(Decoder::new().feed(&tail).is_err());
    }

    #[test]
    fn frame_size_is_bounded() {
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        prelude.extend_from_slice(&crc32fast::hash(&prelude).to_be_bytes());
        assert!(matches!(
            Decoder::new().feed(&prelude),
            Err(TranslateError::Upstream(m)) if m.contains("limit")
        ));
        let mut short = Vec::new();
        short.extend_from_slice(&8u32.to_be_bytes());
        short.extend_from_slice(&0u32.to_be_bytes());
        short.extend_from_slice(&crc32fast::hash(&short).to_be_bytes());
        assert!(Decoder::new().feed(&short).is_err());
        let mut headers_too_long = Vec::new();
        headers_too_long.extend_from_slice(&20u32.to_be_bytes());
        headers_too_long.extend_from_slice(&5u32.to_be_bytes());
        headers_too_long.extend_from_slice(&crc32fast::hash(&headers_too_long).to_be_bytes());
        assert!(Decoder::new().feed(&headers_too_long).is_err());
    }

    #[test]
    fn truncated_header_is_an_error() {
        let mut frame = Vec::new();
        let headers = b"\x05hello\x07\x00\x09abc";
        let total = 16 + headers.len();
        frame.extend_from_slice(&(total as u32).to_be_bytes());
        frame.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        frame.extend_from_slice(headers);
        frame.extend_from_slice(&crc32fast::hash(&frame).to_be_bytes());
        assert!(Decoder::new().feed(&frame).is_err());
    }
}
