//! The OIDC client-credentials token that the cloud token exchanges start from
//! (`oidcExchangeToken` of a BackendSecurityPolicy): the client asks its identity provider for
//! a token, which AWS STS, Entra ID or GCP STS then exchange for provider credentials.

use std::path::Path;

use aigw_filterconfig::OidcExchange;
use serde_json::Value;

use super::http::{self, FetchError};

/// A secret or identifier the config keeps in a file that could not be read. The message
/// names the file, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The error of the read.
        reason: String,
    },
    /// The file holds only white space.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Why no OIDC token could be obtained from the identity provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// The client id or secret file could not be read.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// Discovery or the token endpoint failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The issuer's discovery document names no token endpoint.
    #[error("OIDC discovery: {url} names no token_endpoint")]
    NoTokenEndpoint {
        /// The discovery document's URL.
        url: String,
    },
    /// The token endpoint answered without a token.
    #[error("OIDC token request: the answer carries no access_token")]
    NoToken,
}

/// Reads a value the config gives literally or, as `file:<path>`, in a mounted file.
pub fn literal_or_file(value: &str, base: &Path) -> Result<String, SecretFileError> {
    match value.strip_prefix("file:") {
        Some(path) => read_trimmed(&base.join(path)),
        None => Ok(value.to_string()),
    }
}

/// Reads a secret file, trimmed; the error names the file, never its content.
pub fn read_trimmed(path: &Path) -> Result<String, SecretFileError> {
    let text = std::fs::read_to_string(path).map_err(|err| SecretFileError::Unreadable {
        path: path.display().to_string(),
        reason: err.to_string(),
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(text.to_string())
}

/// The token endpoint: configured, or from the issuer's discovery document.
async fn token_endpoint(oidc: &OidcExchange) -> Result<String, OidcError> {
    if let Some(endpoint) = oidc.token_endpoint.as_deref().filter(|e| !e.is_empty()) {
        return Ok(endpoint.to_string());
    }
    let issuer = oidc.issuer.trim_end_matches('/');
    let url = format!("{issuer}/.well-known/openid-configuration");
    let document = http::send_json(http::client()?.get(&url), "OIDC discovery", &[]).await?;
    document
        .get("token_endpoint")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(OidcError::NoTokenEndpoint { url })
}

/// Obtains a token from the identity provider with the client-credentials grant. `base`
/// resolves relative file paths. Returns the access token (or, when the provider sends only
/// one, the ID token).
pub async fn client_credentials_token(
    oidc: &OidcExchange,
    base: &Path,
) -> Result<String, OidcError> {
    let client_id = literal_or_file(&oidc.client_id, base)?;
    let secret = read_trimmed(&base.join(&oidc.client_secret_file))?;
    let endpoint = token_endpoint(oidc).await?;
    let scope = oidc.scopes.join(" ");
    let mut fields = vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
    ];
    if !scope.is_empty() {
        fields.push(("scope", scope.as_str()));
    }
    let answer = http::post_form(&endpoint, &fields, "OIDC token request").await?;
    answer
        .get("access_token")
        .or_else(|| answer.get("id_token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or(OidcError::NoToken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::TempDir;

    #[test]
    fn secret_files_fail_by_kind_and_name_the_file_only() {
        let dir = TempDir::new("oidc-files");
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_trimmed(&missing),
            Err(SecretFileError::Unreadable { path, .. }) if path == missing.display().to_string()
        ));
        let blank = dir.write("blank", " \n\t");
        assert_eq!(
            read_trimmed(&blank),
            Err(SecretFileError::Empty {
                path: blank.display().to_string()
            })
        );
        dir.write("id", "  client-id-value\n");
        assert_eq!(
            literal_or_file("file:id", dir.path()).as_deref(),
            Ok("client-id-value")
        );
        assert_eq!(
            literal_or_file("literal", dir.path()).as_deref(),
            Ok("literal")
        );
    }
}
