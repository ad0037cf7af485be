//! The one secret scrubber: credential values out of bodies and error texts before they reach a
//! client, a log or a metric.
//!
//! The extproc scrubs the provider's answer of the credentials it sent with the request (a
//! provider may echo a key in an error), and `auth` scrubs token-endpoint error texts of the
//! secrets it posted. Both come here. Credential values themselves travel as [`Secret`],
//! which never prints.

use std::fmt;

/// A secret value. Its `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Values shorter than this are not searched for: they would match ordinary text.
pub const MIN_REDACTED: usize = 8;

/// What a secret is replaced with.
pub const REDACTED: &[u8] = b"<redacted>";

/// `bytes` with every credential value in `secrets` replaced by [`REDACTED`] ([`redact`]).
pub fn scrub(bytes: &[u8], secrets: &[Secret]) -> Option<Vec<u8>> {
    redact(bytes, secrets.iter().map(|s| s.expose().as_bytes()))
}

/// `bytes` with every occurrence of each of `secrets` replaced by [`REDACTED`]; `None` when
/// none occurs (the caller keeps its bytes). Secrets shorter than [`MIN_REDACTED`] bytes are
/// skipped.
pub fn redact<'a>(bytes: &[u8], secrets: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut current: Option<Vec<u8>> = None;
    for needle in secrets {
        if needle.len() < MIN_REDACTED {
            continue;
        }
        let haystack = current.as_deref().unwrap_or(bytes);
        let finder = memchr::memmem::Finder::new(needle);
        if finder.find(haystack).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(haystack.len());
        let mut rest = haystack;
        while let Some(at) = finder.find(rest) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED);
            rest = &rest[at + needle.len()..];
        }
        out.extend_from_slice(rest);
        current = Some(out);
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_of_every_secret_is_replaced() {
        let out = redact(
            b"key sk-secret-1 and sk-secret-1, token tok-abcdefgh",
            [b"sk-secret-1".as_slice(), b"tok-abcdefgh".as_slice()],
        );
        assert_eq!(
            out.as_deref(),
            Some(b"key <redacted> and <redacted>, token <redacted>".as_slice())
        );
    }

    #[test]
    fn nothing_found_or_too_short_leaves_the_bytes_alone() {
        assert_eq!(redact(b"nothing here", [b"sk-secret-1".as_slice()]), None);
        assert_eq!(redact(b"short abc", [b"abc".as_slice()]), None);
        assert_eq!(redact(b"", std::iter::empty()), None);
    }
}
