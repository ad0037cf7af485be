//! The HTTP client the credential flows share (token endpoints, STS, metadata servers): one
//! connection pool, rustls with the system and web PKI roots, 10 s timeouts, answers of at
//! most 1 MiB, and error messages that name the endpoint and status but never echo what was
//! sent (should an endpoint repeat a secret it was sent, the excerpt of its answer shows
//! `<redacted>` instead).

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::redact::redact;

/// How long one call to a token endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of an error body kept in messages.
const ERROR_EXCERPT: usize = 300;
/// The largest answer read (tokens, credentials and discovery documents are a few KiB).
const MAX_ANSWER: usize = 1024 * 1024;
/// Form fields whose values are secrets.
const SECRET_FIELDS: [&str; 4] = [
    "client_secret",
    "client_assertion",
    "assertion",
    "refresh_token",
];

/// Why a call to a token endpoint, STS or metadata server failed. Every message names what was
/// asked for (`what`) and the endpoint; none carries a secret that was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The shared client could not be built (no TLS roots, say).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The endpoint could not be reached, or did not answer in time.
    #[error("{what}: {reason}")]
    Unreachable {
        /// What was asked for (`GCP STS token exchange`, ...).
        what: String,
        /// The cause, without the query of the URL.
        reason: String,
    },
    /// The answer broke off while it was read.
    #[error("{what}: reading the answer of {path}: {reason}")]
    Read {
        /// What was asked for (`GCP STS token exchange`, ...).
        what: String,
        /// The path of the endpoint.
        path: String,
        /// The cause, without the query of the URL.
        reason: String,
    },
    /// The answer is larger than any credential answer is.
    #[error("{what}: the answer of {path} exceeds {MAX_ANSWER} bytes")]
    TooLarge {
        /// What was asked for (`GCP STS token exchange`, ...).
        what: String,
        /// The path of the endpoint.
        path: String,
    },
    /// The endpoint answered with a status other than 2xx; `excerpt` is the start of its
    /// answer, with the secrets sent redacted.
    #[error("{what}: {endpoint} answered {status}: {excerpt}")]
    Status {
        /// What was asked for (`GCP STS token exchange`, ...).
        what: String,
        /// Scheme, host, port and path of the endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer, secrets sent redacted.
        excerpt: String,
    },
    /// A 2xx answer that is not the JSON it should be.
    #[error("{what}: the answer is not JSON: {reason}")]
    NotJson {
        /// What was asked for (`GCP STS token exchange`, ...).
        what: String,
        /// The cause, without the query of the URL.
        reason: String,
    },
}

/// The shared client.
pub fn client() -> Result<&'static reqwest::Client, FetchError> {
    static CLIENT: OnceLock<Result<reqwest::Client, FetchError>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT)
                .user_agent(concat!("aigw-extproc/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|err| FetchError::Client(err.to_string()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A token in a JSON answer: the non-empty string `field`.
pub fn token_field<'a>(answer: &'a Value, field: &str) -> Option<&'a str> {
    answer
        .get(field)
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// `application/x-www-form-urlencoded` encoding of `fields`.
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_into(key, &mut out);
        out.push('=');
        encode_into(value, &mut out);
    }
    out
}

fn encode_into(text: &str, out: &mut String) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

/// Sends `request` and returns the response body when the status is 2xx; otherwise an error
/// naming `what`, the URL, the status and an excerpt of the answer, in which the secrets the
/// request carries (`sent`: tokens, form values), as sent or form-encoded, are redacted.
pub async fn send(
    request: reqwest::RequestBuilder,
    what: &str,
    sent: &[&str],
) -> Result<Vec<u8>, FetchError> {
    let mut response = request
        .send()
        .await
        .map_err(|err| FetchError::Unreachable {
            what: what.to_string(),
            reason: without_url_query(&err.to_string()),
        })?;
    let status = response.status();
    let url = response.url().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| FetchError::Read {
        what: what.to_string(),
        path: url.path().to_string(),
        reason: without_url_query(&err.to_string()),
    })? {
        if body.len().saturating_add(chunk.len()) > MAX_ANSWER {
            return Err(FetchError::TooLarge {
                what: what.to_string(),
                path: url.path().to_string(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = scrub(&String::from_utf8_lossy(&body), sent);
        let excerpt: String = text.chars().take(ERROR_EXCERPT).collect();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        return Err(FetchError::Status {
            what: what.to_string(),
            endpoint: format!(
                "{}://{}{port}{}",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.path()
            ),
            status: status.as_u16(),
            excerpt: excerpt.trim().to_string(),
        });
    }
    Ok(body)
}

/// [`send`], parsing the answer as JSON.
pub async fn send_json(
    request: reqwest::RequestBuilder,
    what: &str,
    sent: &[&str],
) -> Result<Value, FetchError> {
    let body = send(request, what, sent).await?;
    serde_json::from_slice(&body).map_err(|err| FetchError::NotJson {
        what: what.to_string(),
        reason: err.to_string(),
    })
}

/// A POST of a form, answered with JSON; the values of its secret fields (`client_secret`,
/// `client_assertion`, `assertion`, `refresh_token`) never appear in an error.
pub async fn post_form(
    url: &str,
    fields: &[(&str, &str)],
    what: &str,
) -> Result<Value, FetchError> {
    let request = client()?
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form(fields));
    let secrets: Vec<&str> = fields
        .iter()
        .filter(|(name, _)| SECRET_FIELDS.contains(name))
        .map(|(_, value)| *value)
        .collect();
    send_json(request, what, &secrets).await
}

/// `text` with every value of `sent`, as sent and form-encoded, replaced by `<redacted>`
/// ([`redact`]).
fn scrub(text: &str, sent: &[&str]) -> String {
    let encoded: Vec<String> = sent
        .iter()
        .map(|secret| {
            let mut out = String::new();
            encode_into(secret, &mut out);
            out
        })
        .collect();
    let needles = sent
        .iter()
        .map(|s| s.as_bytes())
        .chain(encoded.iter().map(|s| s.as_bytes()));
    match redact(text.as_bytes(), needles) {
        Some(clean) => String::from_utf8_lossy(&clean).into_owned(),
        None => text.to_string(),
    }
}

/// Drops query strings from error texts (reqwest puts the URL in them; queries may carry
/// parameters that are not for logs).
fn without_url_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skipping = false;
    for c in text.chars() {
        if c == '?' {
            skipping = true;
        } else if skipping && (c == ')' || c.is_whitespace()) {
            skipping = false;
        }
        if !skipping {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form(&[("grant_type", "client_credentials"), ("scope", "a b/c&d")]),
            "grant_type=client_credentials&scope=a+b%2Fc%26d"
        );
    }

    #[test]
    fn queries_are_dropped_from_errors() {
        assert_eq!(
            without_url_query("error sending request for url (http://x/y?Token=abc) oops"),
            "error sending request for url (http://x/y) oops"
        );
    }

    #[tokio::test]
    async fn secrets_sent_are_redacted_from_error_excerpts() {
        let echo = crate::auth::test_support::Server::start(&[(
            "/token",
            401,
            r#"{"error":"invalid_client","received":"client_secret=s3cret%2Bvalue%2F1&client_assertion=eyJhbGciOiJSUzI1NiJ9.assertion"}"#,
        )])
        .await;
        let err = post_form(
            &echo.url("/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", "s3cret+value/1"),
                ("client_assertion", "eyJhbGciOiJSUzI1NiJ9.assertion"),
            ],
            "token request",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, FetchError::Status { status: 401, .. }),
            "{err}"
        );
        let err = err.to_string();
        assert!(
            err.contains("401") && err.contains("invalid_client"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        assert!(!err.contains("eyJhbGciOiJSUzI1NiJ9"), "{err}");
        assert_eq!(scrub("short abc", &["abc"]), "short abc");
    }

    #[tokio::test]
    async fn answers_are_bounded() {
        let huge = "x".repeat(MAX_ANSWER + 1);
        let server =
            crate::auth::test_support::Server::start(&[("/huge", 200, huge.as_str())]).await;
        let client = client().unwrap();
        let err = send(client.get(server.url("/huge")), "metadata", &[])
            .await
            .unwrap_err();
        assert!(matches!(&err, FetchError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
