//! The OIDC client-credentials token that the cloud token exchanges start from
//! (`oidcExchangeToken` of a BackendSecurityPolicy): the client asks its identity provider for
//! a token, which AWS STS, Entra ID or GCP STS then exchange for provider credentials.

use std::path::Path;

use aigw_filterconfig::OidcExchange;
use serde_json::Value;

use super::http;

/// Reads a value the config gives literally or, as `file:<path>`, in a mounted file.
pub fn literal_or_file(value: &str, base: &Path) -> Result<String, String> {
    match value.strip_prefix("file:") {
        Some(path) => read_trimmed(&base.join(path)),
        None => Ok(value.to_string()),
    }
}

/// Reads a secret file, trimmed; the error names the file, never its content.
pub fn read_trimmed(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text.to_string())
}

/// The token endpoint: configured, or from the issuer's discovery document.
async fn token_endpoint(oidc: &OidcExchange) -> Result<String, String> {
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
        .ok_or_else(|| format!("OIDC discovery: {url} names no token_endpoint"))
}

/// Obtains a token from the identity provider with the client-credentials grant. `base`
/// resolves relative file paths. Returns the access token (or, when the provider sends only
/// one, the ID token).
pub async fn client_credentials_token(oidc: &OidcExchange, base: &Path) -> Result<String, String> {
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
        .ok_or_else(|| "OIDC token request: the answer carries no access_token".to_string())
}
