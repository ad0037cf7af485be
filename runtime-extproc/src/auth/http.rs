//! The HTTP client the credential flows share (token endpoints, STS, metadata servers): one
//! connection pool, rustls with the system and web PKI roots, 10 s timeouts, and error
//! messages that name the endpoint and status but never echo what was sent.

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// How long one call to a token endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of an error body kept in messages.
const ERROR_EXCERPT: usize = 300;

/// The shared client.
pub fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(TIMEOUT)
                .connect_timeout(TIMEOUT)
                .user_agent(concat!("aigw-extproc/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|err| format!("cannot build the HTTP client: {err}"))
        })
        .as_ref()
        .map_err(Clone::clone)
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
/// naming `what`, the URL, the status and an excerpt of the answer.
pub async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<Vec<u8>, String> {
    let response = request
        .send()
        .await
        .map_err(|err| format!("{what}: {}", without_url_query(&err.to_string())))?;
    let status = response.status();
    let url = response.url().clone();
    let body = response
        .bytes()
        .await
        .map_err(|err| format!("{what}: reading the answer of {}: {err}", url.path()))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let excerpt: String = text.chars().take(ERROR_EXCERPT).collect();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        return Err(format!(
            "{what}: {}://{}{port}{} answered {}: {}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.path(),
            status.as_u16(),
            excerpt.trim()
        ));
    }
    Ok(body.to_vec())
}

/// [`send`], parsing the answer as JSON.
pub async fn send_json(request: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
    let body = send(request, what).await?;
    serde_json::from_slice(&body).map_err(|err| format!("{what}: the answer is not JSON: {err}"))
}

/// A POST of a form, answered with JSON.
pub async fn post_form(url: &str, fields: &[(&str, &str)], what: &str) -> Result<Value, String> {
    let request = client()?
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(form(fields));
    send_json(request, what).await
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
}
