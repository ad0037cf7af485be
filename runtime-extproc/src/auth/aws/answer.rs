//! The answers of STS (XML or JSON), container credentials endpoints and instance metadata
//! (JSON): where they carry the credentials, and what is wrong with one that does not.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::AwsCredentials;
use crate::auth::refresh::Fetched;
use crate::redact::Secret;
use crate::time::parse_rfc3339;

/// What is wrong with an answer. Messages name fields, never their values (the Expiration
/// excepted, which is no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The answer is not UTF-8.
    #[error("the answer is not UTF-8 text")]
    NotText,
    /// The answer looks like JSON and is not.
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    /// A field the credentials need is missing or empty.
    #[error("the answer carries no {0}")]
    Missing(&'static str),
    /// A JSON answer whose `Code` is not `Success`.
    #[error("the answer's Code is {0}")]
    Code(String),
    /// The `Expiration` is neither RFC 3339 nor seconds since the epoch.
    #[error("cannot read the Expiration {0:?}")]
    Expiration(String),
}

/// The text of the first `<tag>` element in `xml`, entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(found) = xml[from..].find(&open) {
        let start = from + found + open.len();
        let rest = &xml[start..];
        match rest.chars().next() {
            Some('>') => {
                let body = &rest[1..];
                let end = body.find(&format!("</{tag}>"))?;
                return Some(xml_unescape(body[..end].trim()));
            }
            Some(c) if c.is_whitespace() => {
                let close = rest.find('>')?;
                if rest[..close].ends_with('/') {
                    return Some(String::new());
                }
                let body = &rest[close + 1..];
                let end = body.find(&format!("</{tag}>"))?;
                return Some(xml_unescape(body[..end].trim()));
            }
            _ => from = start,
        }
    }
    None
}

/// Decodes the XML entities of `text`.
fn xml_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let decoded = after.find(';').and_then(|end| {
            let entity = &after[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            }?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The object holding `AccessKeyId` in a JSON answer (at any depth).
fn json_credentials(value: &Value) -> Option<&serde_json::Map<String, Value>> {
    let object = value.as_object()?;
    if object.contains_key("AccessKeyId") {
        return Some(object);
    }
    object.values().find_map(json_credentials)
}

/// A JSON field as text (numbers too).
fn json_text(object: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key)? {
        Value::String(text) => Some(text.trim().to_string()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
    .filter(|text| !text.is_empty())
}

/// Credentials fields found in an answer, before validation.
pub(super) struct Answer {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    expiration: Option<String>,
}

impl Answer {
    /// Reads an XML (STS) or JSON (STS, container, instance metadata) answer.
    pub(super) fn parse(body: &[u8]) -> Result<Answer, AnswerError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| AnswerError::NotText)?
            .trim();
        if text.starts_with('{') {
            let value: Value =
                serde_json::from_str(text).map_err(|err| AnswerError::NotJson(err.to_string()))?;
            let object = json_credentials(&value).ok_or(AnswerError::Missing("AccessKeyId"))?;
            if let Some(code) = json_text(object, "Code").filter(|code| code != "Success") {
                return Err(AnswerError::Code(code));
            }
            return Ok(Answer {
                access_key_id: json_text(object, "AccessKeyId"),
                secret_access_key: json_text(object, "SecretAccessKey"),
                session_token: json_text(object, "Token")
                    .or_else(|| json_text(object, "SessionToken")),
                expiration: json_text(object, "Expiration"),
            });
        }
        let scope = xml_text(text, "Credentials").unwrap_or_else(|| text.to_string());
        let field = |tag: &str| xml_text(&scope, tag).filter(|v| !v.is_empty());
        Ok(Answer {
            access_key_id: field("AccessKeyId"),
            secret_access_key: field("SecretAccessKey"),
            session_token: field("SessionToken").or_else(|| field("Token")),
            expiration: field("Expiration"),
        })
    }

    /// The credentials; an error names the missing field, never a value.
    pub(super) fn into_credentials(self) -> Result<Fetched<AwsCredentials>, AnswerError> {
        let expires_at = match self.expiration {
            Some(text) => Some(parse_time(&text).ok_or(AnswerError::Expiration(text))?),
            None => None,
        };
        let credentials = AwsCredentials {
            access_key_id: self
                .access_key_id
                .ok_or(AnswerError::Missing("AccessKeyId"))?,
            secret_access_key: Secret::new(
                self.secret_access_key
                    .ok_or(AnswerError::Missing("SecretAccessKey"))?,
            ),
            session_token: self.session_token.map(Secret::new),
            expires_at,
        };
        Ok(Fetched {
            value: credentials,
            expires_at,
        })
    }
}

/// Parses an RFC 3339 time (`2024-06-20T15:04:05Z`, fractions and offsets allowed, see
/// [`parse_rfc3339`]) or a number of seconds since the epoch.
pub(super) fn parse_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        // A time no clock can hold (`1e30`) is no time at all, never a panic.
        return Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|since| SystemTime::UNIX_EPOCH.checked_add(since));
    }
    parse_rfc3339(text)
}
