//! `multipart/form-data` bodies (RFC 7578), as the OpenAI audio endpoints take them: reading
//! the text fields the extproc routes on (`model`, `stream`) and replacing one field's value
//! (the model override) while every other byte of the body, the audio file included, stays
//! exactly as the client sent it.

use std::ops::Range;

use memchr::memmem;

use super::{TranslateError, invalid};

/// One part of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// The `filename`, for file parts.
    pub filename: Option<String>,
    /// Where its content lies in the body.
    pub content: Range<usize>,
}

/// The boundary of a `multipart/form-data` content type; `None` for any other type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!value.is_empty() && value.len() <= 70).then(|| value.to_string())
    })
}

/// A `Content-Disposition` parameter (`name="model"`), quotes removed.
fn disposition_param(headers: &str, key: &str) -> Option<String> {
    for line in headers.split("\r\n") {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if !field.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in value.split(';').skip(1) {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case(key) {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v.to_string());
            }
        }
    }
    None
}

/// The parts of `body`, in order.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, TranslateError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let next_delimiter = format!("\r\n--{boundary}");
    let finder = memmem::Finder::new(next_delimiter.as_bytes());
    // The first delimiter may open the body or follow a preamble.
    let mut at = if body.starts_with(delimiter) {
        0
    } else {
        finder
            .find(body)
            .map(|i| i + 2)
            .ok_or_else(|| invalid("multipart body without its boundary"))?
    };
    let mut parts = Vec::new();
    loop {
        let after = at + delimiter.len();
        let rest = body
            .get(after..)
            .ok_or_else(|| invalid("multipart body ends inside a boundary"))?;
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        let rest = rest
            .strip_prefix(b"\r\n")
            .ok_or_else(|| invalid("multipart boundary not followed by a line break"))?;
        let start = body.len() - rest.len();
        let header_end = memmem::find(rest, b"\r\n\r\n")
            .ok_or_else(|| invalid("multipart part without the blank line after its headers"))?;
        let headers = std::str::from_utf8(&rest[..header_end])
            .map_err(|_| invalid("multipart part headers are not UTF-8"))?;
        let content_start = start + header_end + 4;
        let tail = body
            .get(content_start..)
            .ok_or_else(|| invalid("multipart part ends early"))?;
        let content_end = content_start
            + finder
                .find(tail)
                .ok_or_else(|| invalid("multipart body without its closing boundary"))?;
        let name = disposition_param(headers, "name")
            .ok_or_else(|| invalid("multipart part without a name"))?;
        parts.push(Part {
            name,
            filename: disposition_param(headers, "filename"),
            content: content_start..content_end,
        });
        at = content_end + 2;
    }
}

/// The text value of the first field called `name` (file parts excluded).
pub fn text_field<'a>(body: &'a [u8], parts: &[Part], name: &str) -> Option<&'a str> {
    let part = parts
        .iter()
        .find(|p| p.name == name && p.filename.is_none())?;
    std::str::from_utf8(body.get(part.content.clone())?).ok()
}

/// `body` with the content of the first text field called `name` replaced by `value`.
pub fn replace_field(body: &[u8], parts: &[Part], name: &str, value: &str) -> Option<Vec<u8>> {
    let part = parts
        .iter()
        .find(|p| p.name == name && p.filename.is_none())?;
    let mut out = Vec::with_capacity(body.len() + value.len());
    out.extend_from_slice(body.get(..part.content.start)?);
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(body.get(part.content.end..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "----form7MA4YWxkTrZu0gW";

    fn form() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
        // Binary audio that contains CRLFs and dashes but not the boundary.
        body.extend_from_slice(b"RIFF\x00\x01\r\n--\r\n\xff\xfe");
        body.extend_from_slice(format!("\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"stream\"\r\n\r\ntrue\r\n--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=utf-8; Boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("application/json; boundary=abc"), None);
    }

    #[test]
    fn fields_are_read() {
        let body = form();
        let parts = parse(&body, BOUNDARY).unwrap();
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["file", "model", "stream"]);
        assert_eq!(parts[0].filename.as_deref(), Some("a.wav"));
        assert_eq!(
            &body[parts[0].content.clone()],
            b"RIFF\x00\x01\r\n--\r\n\xff\xfe"
        );
        assert_eq!(text_field(&body, &parts, "model"), Some("whisper-1"));
        assert_eq!(text_field(&body, &parts, "stream"), Some("true"));
        assert_eq!(text_field(&body, &parts, "file"), None);
        assert_eq!(text_field(&body, &parts, "language"), None);
    }

    #[test]
    fn the_model_is_replaced_and_nothing_else_changes() {
        let body = form();
        let parts = parse(&body, BOUNDARY).unwrap();
        let out = replace_field(&body, &parts, "model", "gpt-4o-transcribe").unwrap();
        let expected = String::from_utf8_lossy(&body).replace("whisper-1", "gpt-4o-transcribe");
        assert_eq!(String::from_utf8_lossy(&out), expected);
        let again = parse(&out, BOUNDARY).unwrap();
        assert_eq!(text_field(&out, &again, "model"), Some("gpt-4o-transcribe"));
        assert_eq!(
            &out[again[0].content.clone()],
            &body[parts[0].content.clone()]
        );
    }

    #[test]
    fn a_preamble_is_skipped() {
        let mut body = b"ignored preamble\r\n".to_vec();
        body.extend(form());
        let parts = parse(&body, BOUNDARY).unwrap();
        assert_eq!(text_field(&body, &parts, "model"), Some("whisper-1"));
    }

    #[test]
    fn broken_forms_are_errors_not_panics() {
        let body = form();
        for cut in 0..body.len() {
            let _ = parse(&body[..cut], BOUNDARY);
        }
        assert!(parse(b"no boundary here", BOUNDARY).is_err());
        let unclosed =
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx");
        assert!(parse(unclosed.as_bytes(), BOUNDARY).is_err());
        let nameless =
            format!("--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{BOUNDARY}--");
        assert!(parse(nameless.as_bytes(), BOUNDARY).is_err());
    }
}
